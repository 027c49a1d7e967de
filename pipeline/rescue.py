"""Re-queueing jobs whose worker died, and failing pipelines left with no job at all.

A worker killed with SIGKILL (or OOM, or a lost host) leaves its job in ``doing`` forever.
Procrastinate's workers heartbeat; a job in ``doing`` whose worker has not heartbeaten for
PIPELINE_STALLED_AFTER_SECONDS (or whose worker row was pruned) is stalled. Retrying it is ours
to do: the periodic rescuer in ``pipeline.tasks`` and the admin action both come here. A job
whose worker is alive is never touched, and every re-queue re-checks that under the job's row
lock, so the rescuer and the admin cannot race a worker that just took the job.

A job that has already used up its retries is not re-queued again (a job that kills its worker,
say by running out of memory, would otherwise do so forever): it is marked failed, and the
stranded-run repair below then fails its pipeline with a message and a Retry button.

Procrastinate only NOTIFYs on insert, so after a retry we notify the queue channels ourselves
(same payload as its trigger) for idle workers to pick the job up at once.
"""

from __future__ import annotations

import json
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from procrastinate import jobs

from pipeline import queue, transitions
from pipeline.status import PipelineStatus

logger = logging.getLogger(__name__)

_STALLED_CONDITION = """
    job.status = 'doing' AND (job.worker_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM procrastinate_workers worker
         WHERE worker.id = job.worker_id
           AND worker.last_heartbeat >= now() - make_interval(secs => %(stalled_after)s)))
"""


def _stalled_jobs() -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job.id, job.task_name, job.queue_name, job.attempts"
            f" FROM procrastinate_jobs job WHERE {_STALLED_CONDITION} ORDER BY job.id",
            {"stalled_after": settings.PIPELINE_STALLED_AFTER_SECONDS},
        )
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def stalled_job_ids() -> set[int]:
    """Ids of jobs in ``doing`` whose worker is dead."""
    return {job["id"] for job in _stalled_jobs()}


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


def _lock_job(job_id: int, condition: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM procrastinate_jobs job WHERE job.id = %(job_id)s AND {condition}"
            " FOR UPDATE OF job",
            {"job_id": job_id, "stalled_after": settings.PIPELINE_STALLED_AFTER_SECONDS},
        )
        return cursor.fetchone() is not None


def requeue_stalled_job(job_id: int, queue_name: str) -> bool:
    """Re-queue a job if (still) stalled. False when its worker is alive or it moved on."""
    with transaction.atomic():
        if not _lock_job(job_id, _STALLED_CONDITION):
            return False
        queue.job_manager().retry_job_by_id(job_id=job_id, retry_at=timezone.now())
        _wake_workers(job_id, queue_name)
        return True


def requeue_failed_job(job_id: int, queue_name: str) -> bool:
    """Re-queue a failed job (the outbox e-mail, the rescuer). False if it is not failed."""
    with transaction.atomic():
        if not _lock_job(job_id, "job.status = 'failed'"):
            return False
        queue.job_manager().retry_job_by_id(job_id=job_id, retry_at=timezone.now())
        _wake_workers(job_id, queue_name)
        return True


def _give_up(job_id: int) -> bool:
    with transaction.atomic():
        if not _lock_job(job_id, _STALLED_CONDITION):
            return False
        queue.job_manager().connector.get_sync_connector().execute_query(
            query="SELECT procrastinate_finish_job_v1(%(job_id)s, %(status)s, false)",
            job_id=job_id,
            status=jobs.Status.FAILED.value,
        )
        return True


def rescue_stalled_jobs() -> dict[str, list[int]]:
    """Re-queue stalled jobs that have retries left; fail the others. Then fail the pipelines
    left without a job. Returns what was done, by job or run id."""
    requeued, given_up = [], []
    for job in _stalled_jobs():
        if job["attempts"] >= settings.PIPELINE_STAGE_MAX_RETRIES:
            if _give_up(job["id"]):
                given_up.append(job["id"])
                logger.error("job %s (%s) stalled again; given up", job["id"], job["task_name"])
        elif requeue_stalled_job(job["id"], job["queue_name"]):
            requeued.append(job["id"])
            logger.warning("re-queued stalled job %s (%s)", job["id"], job["task_name"])
    return {"requeued": requeued, "given_up": given_up, "failed_runs": fail_stranded_runs()}


def fail_stranded_runs() -> list[int]:
    """Fail every running run whose current stage has no live job (see
    transitions.fail_stranded_run). The candidates are read without locks; each is re-checked
    under its team's lock before anything changes."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT run.id, run.stage FROM pipeline_pipelinerun run
             WHERE run.state = 'running' AND NOT EXISTS (
                   SELECT 1 FROM procrastinate_jobs job
                    WHERE (job.args ->> 'run_id')::bigint = run.id
                      AND job.task_name = ANY(%s) AND job.status IN ('todo', 'doing'))
            """,
            [list(queue.STAGE_BY_TASK_NAME)],
        )
        candidates = cursor.fetchall()
    failed = []
    for run_id, stage in candidates:
        label = PipelineStatus(stage).label.lower()
        message = (
            f"Processing stopped unexpectedly while {label}. You can retry; if it keeps "
            "failing, contact us."
        )
        if transitions.fail_stranded_run(run_id, message):
            logger.error("run %s had no live job for %s; marked failed", run_id, stage)
            failed.append(run_id)
    return failed


async def rescue() -> dict[str, list[int]]:
    """The periodic rescuer's body (async task; the work runs on Django's connection)."""

    def run() -> dict[str, list[int]]:
        try:
            return rescue_stalled_jobs()
        finally:
            connection.close()

    return await sync_to_async(run, thread_sensitive=False)()
