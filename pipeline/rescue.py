"""Rescuing jobs whose worker died, repairing executions that ended without procrastinate
knowing, and failing pipelines left with no job at all.

Who runs this: every ``manage.py worker`` process, in its own loop every
PIPELINE_RESCUE_INTERVAL_SECONDS on a thread of its own (``rescue_tick``). No cron and no job
row: a periodic job waits behind stage jobs in the queue, and a short-lived worker may never
reach its tick. The admin action and ``pipeline check`` call the functions below too.

Which worker is dead is decided in one place, ``pipeline.liveness`` (worker row gone, liveness
lock lost past a grace, or heartbeat older than PIPELINE_STALLED_AFTER_SECONDS). A job whose
worker is alive is never touched, and every action re-checks that under the job's row lock, so
the rescuer and the admin cannot race a worker that just took the job.

What a rescue does: a stage job is *superseded* (``transitions.supersede_stage_job``: the old
job is failed, a new job becomes the run's current one, in one transaction), so a late finish of
the old execution changes nothing. The e-mail outbox job, which has no run to record a current
job on, is re-queued under its own id as before: safe for a dead process; for a hung one (found
by its heartbeat) a late send could repeat the e-mail.

Two silent hangs are repaired too (issue 8, "no silent hangs"): an execution that ended in our
history (retrying, succeeded, failed, handed back) while its job stayed ``doing`` for longer
than ENDED_EXECUTION_GRACE_SECONDS (procrastinate's own write of the outcome failed, e.g. during
a database outage, and the worker lived on), and a running pipeline with no live job at all.

Procrastinate only NOTIFYs on insert, so after a same-id re-queue we notify the queue channels
ourselves (same payload as its trigger) for idle workers to pick the job up at once; a
superseding job is an insert and notifies by itself.
"""

from __future__ import annotations

import json
import logging

from django.db import connection, transaction
from django.utils import timezone

from pipeline import liveness, queue, transitions
from pipeline.status import PipelineStatus

logger = logging.getLogger(__name__)

# Between our commit of an execution's end and procrastinate recording it there are normally
# milliseconds; a job still ``doing`` this long after is one whose outcome write was lost.
ENDED_EXECUTION_GRACE_SECONDS = 15.0


def _dead(job_id: int | None = None, *, lock: bool = False) -> list[dict]:
    return liveness.dead_worker_jobs(job_id=job_id, lock=lock)


def stalled_job_ids() -> set[int]:
    """Ids of jobs in ``doing`` whose worker is dead."""
    return {job["id"] for job in _dead()}


def awaiting_rescue() -> list[dict]:
    """Stage jobs held by dead workers, for ``pipeline check``: job id, stage, run id, why the
    worker counts as dead, and how long ago the job started (seconds). A lock seen missing by
    this very call counts (no grace: this reports, it changes no job)."""
    liveness.mark_missing_locks()
    rows = []
    for job in liveness.dead_worker_jobs(grace=0):
        stage = queue.STAGE_BY_TASK_NAME.get(job["task_name"])
        if stage is None:
            continue
        rows.append({**job, "stage": stage, "run_id": _run_id_of(job["id"])})
    return rows


def _run_id_of(job_id: int) -> int | None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (args ->> 'run_id')::bigint FROM procrastinate_jobs WHERE id = %s", [job_id]
        )
        row = cursor.fetchone()
        return row[0] if row else None


def _wake_workers(job_id: int, queue_name: str) -> None:
    payload = json.dumps({"type": "job_inserted", "job_id": job_id})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
            [
                "procrastinate_queue_v1#" + queue_name,
                payload,
                "procrastinate_any_queue_v1",
                payload,
            ],
        )


def _lock_failed_job(job_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM procrastinate_jobs WHERE id = %s AND status = 'failed' FOR UPDATE",
            [job_id],
        )
        return cursor.fetchone() is not None


def _stranded_message(stage: str) -> str:
    label = PipelineStatus(stage).label.lower()
    return (
        f"Processing stopped unexpectedly while {label}. You can retry; if it keeps failing, "
        "contact us."
    )


def requeue_stalled_job(job_id: int, queue_name: str) -> bool:
    """Rescue a job if (still) held by a dead worker. False when its worker is alive or the job
    moved on. A stage job is superseded by a new current job; any other job is re-queued."""
    task_name = _task_name(job_id)
    stage = queue.STAGE_BY_TASK_NAME.get(task_name or "")
    run_id = _run_id_of(job_id) if stage else None
    if stage and run_id is not None and _run_exists(run_id):
        outcome = transitions.supersede_stage_job(
            run_id,
            job_id,
            stage,
            still_stalled=lambda: bool(_dead(job_id, lock=True)),
            worker_lost=True,
            give_up_message=_stranded_message(stage),
        )
        if outcome != "alive":
            logger.warning("stage job %s (%s) of run %s: %s", job_id, stage, run_id, outcome)
        return outcome != "alive"
    with transaction.atomic():
        if not _dead(job_id, lock=True):
            return False
        if stage:  # a stage job of a run that no longer exists: nothing to continue
            queue.finish_job(job_id, "aborted")
            return True
        queue.job_manager().retry_job_by_id(job_id=job_id, retry_at=timezone.now())
        _wake_workers(job_id, queue_name)
        logger.warning("re-queued job %s (%s) of a dead worker", job_id, task_name)
        return True


def _task_name(job_id: int) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT task_name FROM procrastinate_jobs WHERE id = %s", [job_id])
        row = cursor.fetchone()
        return row[0] if row else None


def _run_exists(run_id: int) -> bool:
    from pipeline.models import PipelineRun

    return PipelineRun.objects.filter(pk=run_id).exists()


def requeue_failed_job(job_id: int, queue_name: str) -> bool:
    """Re-queue a failed job (the outbox e-mail). False if it is not failed."""
    with transaction.atomic():
        if not _lock_failed_job(job_id):
            return False
        queue.job_manager().retry_job_by_id(job_id=job_id, retry_at=timezone.now())
        _wake_workers(job_id, queue_name)
        return True


_ENDED_EXECUTIONS_SQL = """
    SELECT job.id, job.task_name, (job.args ->> 'run_id')::bigint AS run_id, att.outcome
      FROM procrastinate_jobs job
      JOIN pipeline_stageattempt att ON att.job_id = job.id AND att.job_attempts = job.attempts
     WHERE job.status = 'doing' AND job.task_name = ANY(%(task_names)s)
       AND att.finished_at < now() - make_interval(secs => %(grace)s)
     {job_filter}
     {lock}
"""


def _ended_executions(job_id: int | None = None, *, lock: bool = False) -> list[dict]:
    params: dict = {
        "task_names": list(queue.STAGE_BY_TASK_NAME),
        "grace": ENDED_EXECUTION_GRACE_SECONDS,
    }
    job_filter = ""
    if job_id is not None:
        job_filter = "AND job.id = %(job_id)s"
        params["job_id"] = job_id
    query = _ENDED_EXECUTIONS_SQL.format(
        job_filter=job_filter, lock="FOR UPDATE OF job" if lock else ""
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


# How a job left ``doing`` ends when its execution already ended in our history: as what it
# did, except a "retrying" one, which is superseded (aborted: procrastinate cannot revive it).
_END_STATUS_OF_OUTCOME = {"succeeded": "succeeded", "rescheduled": "succeeded", "failed": "failed"}


def repair_ended_executions() -> list[int]:
    """Jobs left ``doing`` after their execution ended in our history (see the module
    docstring). A "retrying" one is superseded by a new current job (the retry procrastinate
    never recorded); any other is ended, since its run already moved on from it."""
    repaired = []
    for row in _ended_executions():
        stage = queue.STAGE_BY_TASK_NAME[row["task_name"]]
        outcome = transitions.supersede_stage_job(
            row["run_id"],
            row["id"],
            stage,
            still_stalled=lambda job_id=row["id"]: bool(_ended_executions(job_id, lock=True)),
            worker_lost=False,
            give_up_message=_stranded_message(stage),
            end_status=_END_STATUS_OF_OUTCOME.get(row["outcome"], "aborted"),
        )
        if outcome != "alive":
            logger.warning(
                "job %s of run %s ended as %s but stayed doing; %s",
                row["id"],
                row["run_id"],
                row["outcome"],
                outcome,
            )
            repaired.append(row["id"])
    return repaired


def rescue_stalled_jobs() -> dict[str, list[int]]:
    """One rescue pass: note missing liveness locks, rescue jobs of dead workers, repair ended
    executions, fail pipelines left without a job. Returns what was done, by job or run id."""
    liveness.mark_missing_locks()
    rescued = []
    for job in _dead():
        if requeue_stalled_job(job["id"], job["queue_name"]):
            logger.warning(
                "rescued job %s (%s) of worker %s: %s",
                job["id"],
                job["task_name"],
                job["worker_id"],
                job["reason"],
            )
            rescued.append(job["id"])
    return {
        "rescued": rescued,
        "repaired": repair_ended_executions(),
        "failed_runs": fail_stranded_runs(),
    }


def fail_stranded_runs() -> list[int]:
    """Fail every running run whose current stage has no live job (see
    transitions.fail_stranded_run). The candidates are read without locks; each is re-checked
    under its team's lock before anything changes.

    A running run records the job that carries its stage (``current_job_id``, set in the
    transaction that defers it), so the candidates are the runs whose current job is not
    ``todo`` or ``doing``: one primary-key probe per running run, found through the partial
    index of running runs. Every worker runs this every second; matching the jobs' ``run_id``
    argument instead (kept for a run with no recorded job) hashed every queued job each time,
    which with 1,000 runs in flight cost the database as much as procrastinate's own fetches
    (bench/engine, issue 9)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT run.id, run.stage FROM pipeline_pipelinerun run
             WHERE run.state = 'running' AND CASE
                   WHEN run.current_job_id IS NOT NULL THEN NOT EXISTS (
                        SELECT 1 FROM procrastinate_jobs job
                         WHERE job.id = run.current_job_id AND job.status IN ('todo', 'doing'))
                   ELSE NOT EXISTS (
                        SELECT 1 FROM procrastinate_jobs job
                         WHERE (job.args ->> 'run_id')::bigint = run.id
                           AND job.task_name = ANY(%s) AND job.status IN ('todo', 'doing'))
                   END
            """,
            [list(queue.STAGE_BY_TASK_NAME)],
        )
        candidates = cursor.fetchall()
    failed = []
    for run_id, stage in candidates:
        if transitions.fail_stranded_run(run_id, _stranded_message(stage)):
            logger.error("run %s had no live job for %s; marked failed", run_id, stage)
            failed.append(run_id)
    return failed
