"""The nightly batch: every onboarded team gets a run of kind ``nightly`` (incremental sync,
detection of new PRs, metrics, insights; no e-mail), started by a procrastinate periodic task.

Why a fan-out job and not one job per team at 02:00: at 10,000 teams that would put 10,000 sync
jobs in the queue at once, and an onboarding started at 02:01 would wait behind all of them.
Instead one fan-out job keeps at most ``NIGHTLY_MAX_IN_FLIGHT`` nightly runs going, starting the
next teams as earlier ones finish, and re-defers itself every ``NIGHTLY_FAN_OUT_SECONDS`` until
every team has had its turn (a nightly run that ends pulls the waiting step forward, so a
freed slot is refilled at once). Nightly stage jobs carry ``NIGHTLY_JOB_PRIORITY`` (below
onboarding's), and the cap stays under the sync worker's concurrency, so an onboarding's first
stage always finds a free slot.

Each nightly run goes through ``transitions.start_run``: the same history, invariant and rescue
as onboarding. A team that is running something else (an onboarding, a staff restart) is
skipped, and the skip is a row in its run history; a team that cannot start (no repositories
selected any more) is recorded the same way; one team's failure never stops the others.

The batch is identified by the periodic tick's timestamp: a team is done for the batch once it
has any nightly run (running, finished or skipped) started at or after the tick, so a fan-out
job re-run after a crash starts nobody twice.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from procrastinate import exceptions as procrastinate_exceptions
from procrastinate.tasks import configure_task

from onboarding.models import Team
from pipeline import queue, signals, transitions
from pipeline.errors import InvalidSelection, PipelineNotRetryable
from pipeline.models import PipelineRun, RunKind

logger = logging.getLogger(__name__)

TICK_TASK = "pipeline.nightly.tick"
FAN_OUT_TASK = "pipeline.nightly.fan_out"
QUEUE = "default"
# One fan-out job waiting at a time (procrastinate refuses a second todo job with this lock).
FAN_OUT_LOCK = "pipeline-nightly-fan-out"


@dataclass
class FanOutStep:
    started: list[int] = field(default_factory=list)  # team ids
    skipped: list[int] = field(default_factory=list)
    in_flight: int = 0
    remaining: int = 0  # teams still waiting after this step

    @property
    def done(self) -> bool:
        return self.remaining == 0


def onboarded_teams(before: datetime.datetime):
    """Teams whose onboarding had completed by ``before``: the batch's population (a team that
    onboards during the batch has fresh data already)."""
    return Team.objects.filter(
        Exists(
            PipelineRun.objects.filter(
                team=OuterRef("pk"),
                kind=RunKind.ONBOARDING,
                state=PipelineRun.State.COMPLETE,
                finished_at__lt=before,
            )
        )
    )


def waiting_teams(batch_started: datetime.datetime):
    """Onboarded teams with no nightly run yet in the batch that began at ``batch_started``."""
    return (
        onboarded_teams(batch_started)
        .exclude(
            Exists(
                PipelineRun.objects.filter(
                    team=OuterRef("pk"), kind=RunKind.NIGHTLY, started_at__gte=batch_started
                )
            )
        )
        .order_by("pk")
    )


def fan_out_step(batch_started: datetime.datetime) -> FanOutStep:
    """Start nightly runs for waiting teams, up to the in-flight cap. Idempotent."""
    step = FanOutStep()
    step.in_flight = PipelineRun.objects.filter(
        kind=RunKind.NIGHTLY, state=PipelineRun.State.RUNNING
    ).count()
    slots = max(0, settings.NIGHTLY_MAX_IN_FLIGHT - step.in_flight)
    for team in list(waiting_teams(batch_started)[:slots]):
        try:
            run = transitions.start_run(team, RunKind.NIGHTLY)
        except (PipelineNotRetryable, InvalidSelection) as exc:
            transitions.record_skipped_run(team, RunKind.NIGHTLY, f"Not started: {exc}")
            step.skipped.append(team.pk)
            continue
        except Exception:
            # Anything else is a bug or an outage for this team; record it and go on.
            logger.exception("nightly run of team %s could not start", team.pk)
            transitions.record_skipped_run(
                team, RunKind.NIGHTLY, "Not started: an internal error occurred (see the logs)."
            )
            step.skipped.append(team.pk)
            continue
        if run.state == PipelineRun.State.SKIPPED:
            step.skipped.append(team.pk)
        else:
            step.started.append(team.pk)
            step.in_flight += 1
    step.remaining = waiting_teams(batch_started).count()
    return step


def defer_fan_out(batch_started: datetime.datetime, *, delay: float = 0) -> int | None:
    """Queue the next fan-out step (None if one is already waiting)."""
    deferrer = configure_task(
        name=FAN_OUT_TASK,
        job_manager=queue.job_manager(),
        queue=QUEUE,
        priority=settings.NIGHTLY_JOB_PRIORITY,
        queueing_lock=FAN_OUT_LOCK,
        schedule_at=timezone.now() + datetime.timedelta(seconds=delay) if delay else None,
    )
    try:
        with transaction.atomic():
            return deferrer.defer(batch_started=batch_started.timestamp())
    except procrastinate_exceptions.AlreadyEnqueued:
        return None


def run_fan_out(batch_started_timestamp: float) -> FanOutStep:
    """The fan-out task's body: one step, then the next step if teams are still waiting."""
    batch_started = datetime.datetime.fromtimestamp(batch_started_timestamp, tz=datetime.UTC)
    step = fan_out_step(batch_started)
    logger.info(
        "nightly batch of %s: started %s, skipped %s, in flight %s, waiting %s",
        batch_started.isoformat(),
        len(step.started),
        len(step.skipped),
        step.in_flight,
        step.remaining,
    )
    if not step.done:
        defer_fan_out(batch_started, delay=settings.NIGHTLY_FAN_OUT_SECONDS)
    return step


def start_batch(tick_timestamp: int) -> int | None:
    """The periodic tick's body: begin the batch of that tick."""
    batch_started = datetime.datetime.fromtimestamp(tick_timestamp, tz=datetime.UTC)
    return defer_fan_out(batch_started)


def pull_fan_out_forward(sender=None, *, run_id: int, **kwargs) -> None:
    """A nightly run ended (receiver of pipeline_completed/pipeline_failed, after commit): its
    slot is free, so the waiting fan-out step runs now instead of at its scheduled time."""
    kind = kwargs.get("kind")  # pipeline_completed says; pipeline_failed does not
    if kind is None:
        if not PipelineRun.objects.filter(pk=run_id, kind=RunKind.NIGHTLY).exists():
            return
    elif kind != RunKind.NIGHTLY:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET scheduled_at = now() WHERE queueing_lock = %s"
            " AND status = 'todo' AND scheduled_at > now() RETURNING id",
            [FAN_OUT_LOCK],
        )
        row = cursor.fetchone()
        if row is not None:
            # Procrastinate only notifies workers of inserts (see pipeline.rescue).
            payload = json.dumps({"type": "job_inserted", "job_id": row[0]})
            cursor.execute(
                "SELECT pg_notify(%s, %s), pg_notify(%s, %s)",
                ["procrastinate_queue_v1#" + QUEUE, payload, "procrastinate_any_queue_v1", payload],
            )


def connect() -> None:
    signals.pipeline_completed.connect(pull_fan_out_forward, dispatch_uid="nightly_slot_free")
    signals.pipeline_failed.connect(pull_fan_out_forward, dispatch_uid="nightly_slot_free_f")


def last_nightly_update(team: Team) -> datetime.datetime | None:
    """When the team's data was last refreshed by a nightly run (for the dashboard)."""
    return (
        PipelineRun.objects.filter(
            team=team, kind=RunKind.NIGHTLY, state=PipelineRun.State.COMPLETE
        )
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)
        .first()
    )
