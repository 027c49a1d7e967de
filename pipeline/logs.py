"""Logging for expected stage failures: one line, no traceback.

A StageError (a revoked token, a repository the user cannot see, GitHub down) is an outcome we
expected and explained to the user; ``pipeline.tasks`` logs it once at WARNING with the run id.
procrastinate then logs the job's end with the exception attached (ERROR with a traceback for a
final failure); that line adds nothing for these, so this filter drops it. Unexpected errors keep
their tracebacks.
"""

from __future__ import annotations

import logging

from pipeline.errors import StageError


class DropExpectedStageErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (isinstance(exc, StageError) and record.name.startswith("procrastinate"))
