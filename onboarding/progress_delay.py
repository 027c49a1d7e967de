"""Why a running pipeline is not moving, for the progress snapshot
(``onboarding.progress_snapshot``): "Processing is delayed" tells the truth about why nothing
moves (``Delay``).

Three reasons: no worker is running; a worker is running but this stage's execution stalled
(its worker died: the rule is ``pipeline.rescue.stalled_job_ids()``, never re-implemented
here), with the time the rescuer is expected to hand it to a live worker; or the stage waits
for GitHub's rate-limit reset. A live worker is a row in ``procrastinate_workers`` with a
heartbeat within PIPELINE_STALLED_AFTER_SECONDS (the snapshot's ``QueueView`` counts them).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from pipeline.models import StageAttempt
from pipeline.status import STAGE_ORDER

if TYPE_CHECKING:  # the snapshot module imports this one
    from onboarding.progress_snapshot import QueueView

# "No worker is running" needs both: nothing happened for this long, and no live worker (a
# worker restarted by its supervisor is back well within it).
DELAYED_AFTER_SECONDS = 30


class DelayReason:
    NO_WORKER = "no_worker"
    STALLED = "stalled"
    RATE_LIMIT = "rate_limit"


@dataclass(frozen=True)
class Delay:
    """Why a running pipeline is not moving, in words for the user."""

    reason: str
    message: str
    # When it is expected to move again, if known (the rescue, the rate-limit reset).
    until: datetime.datetime | None = None

    def as_json(self) -> dict:
        return {
            "reason": self.reason,
            "message": self.message,
            "until": self.until.isoformat() if self.until else None,
        }


def expected_rescue_at(now: datetime.datetime) -> datetime.datetime:
    """When the rescuer is next expected to hand a stalled job to a live worker: every live
    worker runs a rescue pass every PIPELINE_RESCUE_INTERVAL_SECONDS (pipeline.rescue)."""
    return now + datetime.timedelta(seconds=settings.PIPELINE_RESCUE_INTERVAL_SECONDS)


def delay_for(
    status: str,
    attempts: list[StageAttempt],
    queue: QueueView,
    last_activity: datetime.datetime | None,
    now: datetime.datetime,
) -> Delay | None:
    """Why the pipeline in ``status`` is not moving, or None when it moves or is not running."""
    if status not in STAGE_ORDER:
        return None
    latest = next((a for a in reversed(attempts) if a.stage == status), None)
    if (
        queue.status == "todo"
        and queue.scheduled_at is not None
        and queue.scheduled_at > now
        and latest is not None
        and latest.outcome == StageAttempt.Outcome.RESCHEDULED
    ):
        at = queue.scheduled_at.astimezone(datetime.UTC)
        return Delay(
            DelayReason.RATE_LIMIT,
            f"waiting for GitHub's rate limit to reset; it continues by itself at {at:%H:%M} UTC.",
            until=queue.scheduled_at,
        )
    no_worker = Delay(
        DelayReason.NO_WORKER,
        "no worker is running. It resumes by itself when a worker starts.",
    )
    if queue.stalled:
        if queue.live_workers == 0:
            return no_worker
        at = max(expected_rescue_at(now), now)
        return Delay(
            DelayReason.STALLED,
            "the worker running this stage stopped. A running worker takes the stage over by"
            f" about {at.astimezone(datetime.UTC):%H:%M:%S} UTC; nothing is lost.",
            until=at,
        )
    idle = last_activity is not None and (now - last_activity).total_seconds() > (
        DELAYED_AFTER_SECONDS
    )
    if queue.live_workers == 0 and idle:
        return no_worker
    return None
