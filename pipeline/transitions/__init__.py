"""The only code that changes a team's pipeline status (this package; nothing else writes it).

Every function here is one transaction that (1) locks the team row and checks that the pipeline
is still where the caller thinks it is (compare-and-swap: if another run or a re-run already
moved it, nothing happens), (2) writes the new status and a history row, and (3) defers the next
job on Django's connection and sends ``pg_notify``. All of it commits, or none of it does, so the
status and the queue never drift (see ``pipeline.invariant`` for the query that checks it).

Lock order is always team row first, then the run: two transitions on one team never deadlock.

Where things are: ``runs`` holds a run's lifecycle (start, retry, cancel, restart, the skipped
runs of the history), ``stages`` one stage's execution (begin, hand-off, retry later,
reschedule, fail, rescue's supersede and stranded-run failure), ``_common`` the row locks and
compare-and-swap checks both share. Callers import from ``pipeline.transitions`` only.
"""

from pipeline.transitions._common import WORKER_LOST_MESSAGE, job_priority
from pipeline.transitions.runs import (
    CANCELLED_MESSAGE,
    FIRST_STAGE,
    RESTARTED_MESSAGE,
    cancel_pipeline,
    record_skipped_run,
    restart_pipeline,
    retry_pipeline,
    start_pipeline,
    start_run,
)
from pipeline.transitions.stages import (
    begin_stage,
    complete_stage,
    fail_stage,
    fail_stranded_run,
    reschedule_stage,
    retry_stage_later,
    supersede_stage_job,
)

__all__ = [
    "CANCELLED_MESSAGE",
    "FIRST_STAGE",
    "RESTARTED_MESSAGE",
    "WORKER_LOST_MESSAGE",
    "begin_stage",
    "cancel_pipeline",
    "complete_stage",
    "fail_stage",
    "fail_stranded_run",
    "job_priority",
    "record_skipped_run",
    "reschedule_stage",
    "restart_pipeline",
    "retry_pipeline",
    "retry_stage_later",
    "start_pipeline",
    "start_run",
    "supersede_stage_job",
]
