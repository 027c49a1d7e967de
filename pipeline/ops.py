"""The live operations page's numbers, read in one go: queue depth per queue, jobs doing and
stalled, the oldest waiting job, stage p50/p95 durations and failures over 24 hours, pipelines
running, failed and rescued today, and the status/queue drift of ``pipeline check``.

Every query is an aggregate over an indexed slice (live jobs by status, attempts finished in
the last 24 hours, runs by state), so the page stays cheap with a million finished jobs; stalled
jobs come from ``pipeline.rescue.stalled_job_ids()`` (the rescuer's own rule) and drift from
``pipeline.invariant.find_drift()``. The stream (``pipeline.ops_views``) re-reads this after
status changes, at most twice a second, through the progress page's LISTEN connection.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from pipeline import rescue
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from pipeline.transitions import WORKER_LOST_MESSAGE


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    waiting: int  # todo and due now
    scheduled: int  # todo, due later (retry backoff, rate-limit resets)
    doing: int


@dataclass(frozen=True)
class StageStats:
    stage: str
    label: str
    attempts: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class OldestWaiting:
    job_id: int
    queue: str
    task_name: str
    waiting_seconds: float


@dataclass
class OpsSnapshot:
    read_at: datetime.datetime
    queues: list[QueueDepth] = field(default_factory=list)
    doing: int = 0
    stalled: int = 0
    oldest_waiting: OldestWaiting | None = None
    stages: list[StageStats] = field(default_factory=list)
    running_by_kind: dict[str, int] = field(default_factory=dict)
    failed_today: int = 0
    rescued_today: int = 0
    drift: int = 0

    @property
    def running(self) -> int:
        return sum(self.running_by_kind.values())


def _rows(query: str, params: list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall()


def read_snapshot() -> OpsSnapshot:
    now = timezone.now()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    snap = OpsSnapshot(read_at=now)
    snap.queues = [
        QueueDepth(*row)
        for row in _rows(
            """
            SELECT queue_name,
                   count(*) FILTER (WHERE status = 'todo'
                                      AND (scheduled_at IS NULL OR scheduled_at <= now())),
                   count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()),
                   count(*) FILTER (WHERE status = 'doing')
              FROM procrastinate_jobs WHERE status IN ('todo', 'doing')
             GROUP BY queue_name ORDER BY queue_name
            """
        )
    ]
    snap.doing = sum(q.doing for q in snap.queues)
    snap.stalled = len(rescue.stalled_job_ids())
    oldest = _rows(
        """
        SELECT job.id, job.queue_name, job.task_name,
               extract(epoch FROM now() - greatest(
                   coalesce(job.scheduled_at, '-infinity'::timestamptz),
                   (SELECT min(ev.at) FROM procrastinate_events ev WHERE ev.job_id = job.id)))
          FROM procrastinate_jobs job
         WHERE job.status = 'todo' AND (job.scheduled_at IS NULL OR job.scheduled_at <= now())
         ORDER BY job.id LIMIT 1
        """
    )
    if oldest:
        job_id, queue_name, task_name, waited = oldest[0]
        snap.oldest_waiting = OldestWaiting(job_id, queue_name, task_name, float(waited or 0))
    by_stage = {
        stage: (attempts, failures, p50, p95)
        for stage, attempts, failures, p50, p95 in _rows(
            """
            SELECT stage, count(*), count(*) FILTER (WHERE outcome = 'failed'),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
              FROM pipeline_stageattempt
             WHERE finished_at >= now() - interval '24 hours'
             GROUP BY stage
            """
        )
    }
    snap.stages = [
        StageStats(stage, PipelineStatus(stage).label, *by_stage.get(stage, (0, 0, None, None)))
        for stage in STAGE_ORDER
    ]
    snap.running_by_kind = dict(
        PipelineRun.objects.filter(state=PipelineRun.State.RUNNING)
        .values_list("kind")
        .annotate(n=Count("id"))
        .values_list("kind", "n")
    )
    snap.failed_today = PipelineRun.objects.filter(
        state=PipelineRun.State.FAILED, finished_at__gte=today
    ).count()
    # A rescued stage's new execution records the lost one as failed with this message.
    snap.rescued_today = StageAttempt.objects.filter(
        error=WORKER_LOST_MESSAGE, finished_at__gte=today
    ).count()
    snap.drift = len(find_drift())
    return snap
