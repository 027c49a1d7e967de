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


def _count_completion(run: PipelineRun) -> None:
    """Count, in the run's summary, how many executions ran this stage's body to its end."""
    from django.db import connection

    key = f"completions_{run.stage}"
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE pipeline_pipelinerun SET summary = summary"
            " || jsonb_build_object(%s::text, coalesce((summary ->> %s)::int, 0) + 1)"
            " WHERE id = %s",
            [key, key, run.pk],
        )


def paged(run: PipelineRun) -> dict:
    """FAULT_PAGES pages of FAULT_PAGE_SECONDS each, reporting progress after every page (the
    page boundary where an execution checks it should go on), resuming from the last one."""
    from pipeline.progress import report

    pages = int(os.environ.get("FAULT_PAGES", "30"))
    done = int((run.progress or {}).get("pages_done", 0))
    for page in range(done, pages):
        time.sleep(float(os.environ.get("FAULT_PAGE_SECONDS", "0.25")))
        report(run, pages_done=page + 1)
    _count_completion(run)
    return {"pages": pages}


def cpu_heavy(run: PipelineRun) -> dict:
    """Pure-Python work holding the GIL for FAULT_CPU_SECONDS, with no page boundary."""
    deadline = time.monotonic() + float(os.environ.get("FAULT_CPU_SECONDS", "8"))
    total = 0
    while time.monotonic() < deadline:
        total += sum(i * i for i in range(10_000))
    _count_completion(run)
    return {"cpu": 1}
