"""Re-queueing jobs whose worker died.

A worker killed with SIGKILL (or OOM, or a lost host) leaves its job in ``doing`` forever.
Procrastinate's workers heartbeat; a job in ``doing`` whose worker has not heartbeaten for
PIPELINE_STALLED_AFTER_SECONDS (or whose worker row was pruned) is stalled. Retrying it is ours
to do: the periodic rescuer in ``pipeline.tasks`` and the admin action both come here. A job
whose worker is alive is never touched.

Procrastinate only NOTIFYs on insert, so after a retry we notify the queue channels ourselves
(same payload as its trigger) for idle workers to pick the job up at once.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from procrastinate import manager, sql

from pipeline import queue

logger = logging.getLogger(__name__)


def _wake_workers_sql(job_id: int, queue_name: str) -> tuple[str, list]:
    payload = json.dumps({"type": "job_inserted", "job_id": job_id})
    return (
        "SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
        ["procrastinate_queue_v1#" + queue_name, payload, "procrastinate_any_queue_v1", payload],
    )


async def requeue_stalled_jobs(job_manager: manager.JobManager) -> list[int]:
    """Async, for the periodic task running on the worker's own connector."""
    stalled = await job_manager.get_stalled_jobs(
        seconds_since_heartbeat=settings.PIPELINE_STALLED_AFTER_SECONDS
    )
    requeued = []
    for job in stalled:
        assert job.id is not None
        await job_manager.retry_job_by_id_async(job_id=job.id, retry_at=timezone.now())
        query, params = _wake_workers_sql(job.id, job.queue)
        await job_manager.connector.execute_query_async(
            query="SELECT pg_notify(%(c1)s, %(p)s), pg_notify(%(c2)s, %(p)s)",
            c1=params[0],
            p=params[1],
            c2=params[2],
        )
        requeued.append(job.id)
        logger.warning("re-queued stalled job %s (%s)", job.id, job.task_name)
    return requeued


def stalled_job_ids() -> set[int]:
    """Ids of jobs in ``doing`` whose worker is dead, read on Django's connection."""
    rows = (
        queue.job_manager()
        .connector.get_sync_connector()
        .execute_query_all(
            query=sql.queries["select_stalled_jobs_by_heartbeat"],
            queue=None,
            task_name=None,
            seconds_since_heartbeat=settings.PIPELINE_STALLED_AFTER_SECONDS,
        )
    )
    return {row["id"] for row in rows}


def requeue_job(job_id: int, queue_name: str) -> None:
    """Re-queue one stalled or failed job now, on Django's connection, and wake the workers."""
    with transaction.atomic():
        queue.job_manager().retry_job_by_id(job_id=job_id, retry_at=timezone.now())
        query, params = _wake_workers_sql(job_id, queue_name)
        with connection.cursor() as cursor:
            cursor.execute(query, params)
