"""Stage functions the engine tests run inside real worker processes (through
PIPELINE_STAGE_OVERRIDES). Their behaviour depends only on the database and the environment, so
the worker process and the test agree on it."""

from __future__ import annotations

import os
import time

from pipeline.errors import StageError
from pipeline.models import PipelineRun, StageAttempt


def _attempt_number(run: PipelineRun) -> int:
    return run.attempts.filter(stage=run.stage).count()


def quick(run: PipelineRun) -> dict:
    return {"stage": str(run.stage)}


def slow_first_attempt(run: PipelineRun) -> dict:
    """Blocks on its first attempt (long enough to be killed), is quick once rescued."""
    if _attempt_number(run) == 1:
        time.sleep(float(os.environ.get("FAULT_SLEEP_SECONDS", "120")))
    return {"attempt": _attempt_number(run)}


def flaky(run: PipelineRun) -> dict:
    """A transient failure on the first attempt, success after."""
    if not run.attempts.filter(stage=run.stage, outcome=StageAttempt.Outcome.RETRYING).exists():
        raise ConnectionError("upstream timed out")
    return {"recovered": 1}


def revoked_token(run: PipelineRun) -> dict:
    raise StageError("GitHub connection is broken: reconnect GitHub.")


def crash(run: PipelineRun) -> dict:
    raise RuntimeError("secret=hunter2 stack detail that users must never see")
