"""The stage execution running in this thread, and the cheap check its body makes between pages.

A stage job can stop being the one that carries its stage while it runs: the rescuer
superseded it (its worker looked dead: a hung process, a long partition) and deferred a new job
that the run now records as ``current_job_id``. Its hand-off would then change nothing
(``transitions`` only accept the running attempt), but its body would keep writing and calling
GitHub or the LLM for nothing, alongside the new execution. So stage bodies call
``checkpoint()`` between pages or batches (``pipeline.progress.report`` does it for them):

- when the worker process is stopping (SIGTERM, or procrastinate stopping its worker after a
  lost listener connection), it raises ``HandBack``: the runner defers the stage again for now,
  as the run's new current job, and ends this one. Another worker (or this one once restarted)
  continues from the last recorded page instead of this worker running the stage to completion
  after its heartbeat stopped;
- when the run's current job is no longer this one (or the run ended), it raises
  ``Superseded``: the runner stops quietly.

The database read is at most once per CHECK_INTERVAL_SECONDS per execution; the stop flag is
an in-memory read. Outside a worker (tests calling stage functions directly, the shell) there is
no current execution and ``checkpoint()`` does nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from pipeline.errors import RescheduleStage

CHECK_INTERVAL_SECONDS = 1.0
HAND_BACK_REASON = "The worker was shutting down; another worker continues this step."

# Set by the worker command when its procrastinate worker is asked to stop; cleared when it
# starts a new one.
STOPPING = threading.Event()

_local = threading.local()


class Superseded(Exception):
    """This execution is no longer the run's current one: stop, change nothing."""


class HandBack(RescheduleStage):
    """The worker is stopping: continue the stage in a new job, now."""

    def __init__(self) -> None:
        super().__init__(at=timezone.now(), reason=HAND_BACK_REASON)


@dataclass
class Execution:
    run_id: int
    job_id: int
    checked_at: float


def current() -> Execution | None:
    return getattr(_local, "execution", None)


@contextmanager
def executing(run_id: int, job_id: int) -> Iterator[Execution]:
    """Mark ``job_id`` as the execution of ``run_id``'s stage running in this thread."""
    execution = Execution(run_id=run_id, job_id=job_id, checked_at=time.monotonic())
    _local.execution = execution
    try:
        yield execution
    finally:
        _local.execution = None


def checkpoint() -> None:
    """Raise HandBack or Superseded if this execution should stop (see the module docstring)."""
    execution = current()
    if execution is None:
        return
    if STOPPING.is_set():
        raise HandBack()
    now = time.monotonic()
    if now - execution.checked_at < CHECK_INTERVAL_SECONDS:
        return
    execution.checked_at = now
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pipeline_pipelinerun WHERE id = %s AND state = 'running'"
            " AND current_job_id = %s",
            [execution.run_id, execution.job_id],
        )
        if cursor.fetchone() is None:
            raise Superseded(f"job {execution.job_id} is no longer run {execution.run_id}'s")
