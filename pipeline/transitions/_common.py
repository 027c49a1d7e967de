"""What both halves of ``pipeline.transitions`` share: the team row locks (always taken first),
the compare-and-swap checks that decide whether a run or attempt is still current, closing an
attempt, and the priority a run's jobs get. See the package docstring for the invariant."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable

from django.conf import settings

from onboarding.models import Team
from pipeline.errors import InvalidSelection
from pipeline.models import PipelineRun, RunKind, StageAttempt

logger = logging.getLogger(__name__)

WORKER_LOST_MESSAGE = "The worker running this step stopped before finishing; it was restarted."


def job_priority(run: PipelineRun) -> int | None:
    """Scheduled runs' jobs yield to onboarding's (procrastinate takes higher first); None keeps
    the job spec's own priority."""
    return kind_priority(run.kind)


def kind_priority(kind: str) -> int | None:
    """``job_priority`` for a run of ``kind``."""
    return None if kind == RunKind.ONBOARDING else settings.NIGHTLY_JOB_PRIORITY


def _lock_team(team_id: int) -> Team:
    return Team.objects.select_for_update().get(pk=team_id)


def _lock_team_of(**lookup) -> Team:
    """Lock the team row found through a run or attempt (one statement: the hand-off's cost is
    counted, see tests/pipeline/test_handoff_budget.py). Only the team row is locked; rows of
    the join are read again after the lock by the caller."""
    return Team.objects.select_for_update(of=("self",)).get(**lookup)


def _parse_ids(repository_ids: Iterable) -> list[int]:
    ids = []
    for raw in repository_ids:
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            raise InvalidSelection(f"{raw!r} is not a repository id.") from None
    return sorted(set(ids))


def _is_current(team: Team, run: PipelineRun, stage: str) -> bool:
    return (
        run.state == PipelineRun.State.RUNNING
        and run.stage == stage
        and team.pipeline_status == stage
    )


def _finish_attempt(
    attempt: StageAttempt,
    outcome: str,
    now: datetime.datetime,
    *,
    error: str = "",
    counts: dict | None = None,
) -> None:
    attempt.outcome = outcome
    attempt.finished_at = now
    attempt.duration_ms = max(0, int((now - attempt.started_at).total_seconds() * 1000))
    attempt.error = error
    if counts is not None:
        attempt.counts = counts
    attempt.save(update_fields=["outcome", "finished_at", "duration_ms", "error", "counts"])


def _lock_attempt(attempt_id: int) -> tuple[Team, PipelineRun, StageAttempt] | None:
    """Lock the team of an attempt and return fresh rows, or None if the attempt is no longer
    the running attempt of the current stage (compare-and-swap failed)."""
    team = _lock_team_of(runs__attempts__id=attempt_id)
    # Read after the lock: every change to these rows is made under it.
    attempt = StageAttempt.objects.select_related("run").get(pk=attempt_id)
    run = attempt.run
    superseded = attempt.job_id is not None and run.current_job_id not in (None, attempt.job_id)
    if (
        attempt.outcome != StageAttempt.Outcome.RUNNING
        or superseded
        or not _is_current(team, run, attempt.stage)
    ):
        logger.info("attempt %s is no longer current; hand-off skipped", attempt_id)
        return None
    return team, run, attempt
