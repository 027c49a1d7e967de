"""Logging: expected failures read as one line, unexpected ones keep their traceback.

A stage that fails for a reason retrying cannot fix (``StageError(retryable=False)``: a revoked
token, a broken connection) is logged by ``pipeline.tasks`` as one WARNING line with the run
id and the user-facing message. procrastinate's worker then logs the same job's end at ERROR
with the exception's traceback (40 lines for a 401). For those exceptions only, this filter
turns that record into an INFO line without the traceback (below procrastinate's default log
level, so it is not shown); any other exception keeps its ERROR and its traceback.
"""

from __future__ import annotations

import logging

from pipeline.errors import StageError


def is_expected(exc: BaseException | None) -> bool:
    return isinstance(exc, StageError) and not exc.retryable


class ExpectedFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        exc = exc_info[1] if isinstance(exc_info, tuple) else None
        if is_expected(exc):
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
            # The level was decided before filters run: drop it here unless INFO is enabled.
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True
