"""Expected stage failures log one WARNING line with the run id; unexpected ones keep their
traceback (the console handler's filter, pipeline.logs)."""

from __future__ import annotations

import logging
import sys

from pipeline.errors import StageError
from pipeline.logs import DropExpectedStageErrors


def record(name: str, exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, "Job ended", None, exc_info)


def test_procrastinates_traceback_line_for_an_expected_stage_error_is_dropped():
    keep = DropExpectedStageErrors().filter

    assert not keep(record("procrastinate.worker", StageError("reconnect GitHub")))
    assert keep(record("procrastinate.worker", RuntimeError("bug")))
    # Our own one-line warning about it is not a procrastinate record: it stays.
    assert keep(record("pipeline.tasks", StageError("reconnect GitHub")))


def test_the_console_handler_carries_the_filter(settings):
    assert "expected_stage_errors" in settings.LOGGING["handlers"]["console"]["filters"]
