"""Deferring jobs inside the caller's Django transaction.

Inside a procrastinate worker (``manage.py worker``), procrastinate swaps the app's
connector for a psycopg pool (``DjangoConnector.get_worker_connector()``), so a plain
``task.defer()`` inside a task commits on its own, outside the task's ``transaction.atomic()``:
a rolled-back hand-off would still enqueue its successor. Every pipeline job is therefore deferred
through a JobManager bound to Django's own connection, whatever process we are in.
``configure_task`` does not copy a task's options, so the specs below are the one place that
names each job's task and queue; ``pipeline.tasks`` declares its tasks from them.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.db import connection
from procrastinate.contrib.django.django_connector import DjangoConnector
from procrastinate.manager import JobManager
from procrastinate.tasks import configure_task

from pipeline.status import PipelineStatus


@dataclass(frozen=True)
class JobSpec:
    task_name: str
    queue: str
    priority: int = 0


# Queues: a long sync never blocks the light stages.
STAGE_JOBS: dict[str, JobSpec] = {
    PipelineStatus.SYNCING: JobSpec("pipeline.stage.sync", "sync"),
    PipelineStatus.LLM_PROCESSING: JobSpec("pipeline.stage.detect", "llm"),
    PipelineStatus.COMPUTING_METRICS: JobSpec("pipeline.stage.metrics", "default"),
    PipelineStatus.COMPUTING_INSIGHTS: JobSpec("pipeline.stage.insights", "default"),
}
EMAIL_JOB = JobSpec("pipeline.outbox.send_email", "default")

STAGE_BY_TASK_NAME: dict[str, str] = {spec.task_name: stage for stage, spec in STAGE_JOBS.items()}

_django_job_manager = JobManager(DjangoConnector())


def job_manager() -> JobManager:
    """A JobManager whose queries run on Django's connection of the current thread."""
    return _django_job_manager


def defer(
    spec: JobSpec,
    *,
    schedule_at: datetime.datetime | None = None,
    priority: int | None = None,
    **task_kwargs,
) -> int:
    """Insert a job on Django's connection: it commits or rolls back with the caller.
    ``priority`` overrides the spec's (nightly runs' jobs yield to onboarding's)."""
    deferrer = configure_task(
        name=spec.task_name,
        job_manager=_django_job_manager,
        queue=spec.queue,
        priority=spec.priority if priority is None else priority,
        schedule_at=schedule_at,
    )
    return deferrer.defer(**task_kwargs)


def defer_stage(
    stage: str,
    *,
    run_id: int,
    schedule_at: datetime.datetime | None = None,
    priority: int | None = None,
) -> int:
    return defer(STAGE_JOBS[stage], run_id=run_id, schedule_at=schedule_at, priority=priority)


def live_stage_jobs(run_id: int, stage: str) -> int:
    """How many todo/doing jobs carry ``stage`` of run ``run_id`` (on Django's connection)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s"
            " AND (args ->> 'run_id')::bigint = %s AND status IN ('todo', 'doing')",
            [STAGE_JOBS[stage].task_name, run_id],
        )
        return cursor.fetchone()[0]


def is_failed_stage_job(job_id: int, *, run_id: int, stage: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM procrastinate_jobs WHERE id = %s AND task_name = %s"
            " AND (args ->> 'run_id')::bigint = %s AND status = 'failed'",
            [job_id, STAGE_JOBS[stage].task_name, run_id],
        )
        return cursor.fetchone() is not None


def finish_job(job_id: int, status: str) -> None:
    """End a todo/doing job as ``status`` (succeeded, failed, aborted) with procrastinate's own
    SQL function, on Django's connection: it commits with the caller (the rescuer's supersede)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT procrastinate_finish_job_v1(%s, %s::procrastinate_job_status, false)",
            [job_id, status],
        )
