"""What every screen describes: the team's latest completed run, its repositories and its window.

Why one module: the dashboard headline, its charts, the PR table, the insights, the e-mail and
the status JSON used to count different things (every PR the team ever synced, the run's
repositories only, all PRs against merged PRs). They now all read a ``Scope`` from here and
count with its definitions, so they cannot disagree.

Definitions (named on screen the same way):

- The run: the latest *completed* run of the team, of any kind (onboarding, nightly, rescore).
  Earlier runs' data stays stored (PRs of repositories no longer selected, older weeks) but is
  not counted.
- The window: ``SYNC_WINDOW_DAYS`` before the run started, up to the moment it finished (the
  sync stage fetches exactly the PRs updated since ``window_start(run)``). Weeks are ISO weeks
  (Monday 00:00 UTC), starting at the window's first week: a PR opened before the window (an
  old PR merged or updated lately) never pulls the charts' start back.
- A PR is *in scope* when it belongs to one of the run's repositories and was opened or merged
  inside the window.
- "Merged" means merged inside the window; "AI share" is always the AI-assisted share of
  merged PRs: AI-assisted PRs merged in the window divided by all PRs merged in the window.
- Frozen per run: the metrics stage writes the run's weekly rows and its totals together
  (``run.summary["totals"]``); the dashboard reads the latest completed run's rows, totals and
  insights, so a run in progress (a nightly sync, a rescore changing verdicts) moves nothing on
  screen until it completes. Only the PR table reads the PRs live (their latest verdicts).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from pipeline.models import PipelineRun, PullRequest

AI_SHARE_LABEL = "AI-assisted share of merged PRs"


def window_start(run: PipelineRun) -> datetime.datetime:
    """The oldest moment the run's data covers: fixed by the run's start, so a retried sync, a
    later stage and the dashboard all agree on it."""
    return run.started_at - datetime.timedelta(days=settings.SYNC_WINDOW_DAYS)


def week_of(moment: datetime.datetime) -> datetime.date:
    """The Monday (UTC) of the ISO week that holds ``moment``."""
    day = moment.astimezone(datetime.UTC).date()
    return day - datetime.timedelta(days=day.weekday())


def latest_completed_run(team_id: int) -> PipelineRun | None:
    return (
        PipelineRun.objects.filter(team_id=team_id, state=PipelineRun.State.COMPLETE)
        .order_by("-finished_at", "-id")
        .first()
    )


@dataclass(frozen=True)
class Totals:
    prs: int
    merged: int
    ai_merged: int

    @property
    def ai_share(self) -> float | None:
        return self.ai_merged / self.merged if self.merged else None

    @property
    def ai_share_percent(self) -> int | None:
        share = self.ai_share
        return None if share is None else round(share * 100)

    def as_json(self) -> dict:
        return {
            "pull_requests": self.prs,
            "merged": self.merged,
            "ai_assisted_merged": self.ai_merged,
            "ai_share_of_merged": None if self.ai_share is None else round(self.ai_share, 4),
        }


@dataclass(frozen=True)
class Scope:
    run: PipelineRun
    repository_ids: tuple[int, ...]
    start: datetime.datetime
    end: datetime.datetime

    @classmethod
    def of_run(cls, run: PipelineRun, *, end: datetime.datetime | None = None) -> Scope:
        """The scope of ``run``; ``end`` defaults to its finish (now while it still runs)."""
        return cls(
            run=run,
            repository_ids=tuple(int(pk) for pk in run.repository_ids),
            start=window_start(run),
            end=end or run.finished_at or timezone.now(),
        )

    @property
    def first_week(self) -> datetime.date:
        return week_of(self.start)

    def _opened(self, prefix: str = "") -> Q:
        return Q(**{f"{prefix}created_at__gte": self.start, f"{prefix}created_at__lte": self.end})

    def _merged(self, prefix: str = "") -> Q:
        return Q(**{f"{prefix}merged_at__gte": self.start, f"{prefix}merged_at__lte": self.end})

    def pull_requests(self) -> QuerySet[PullRequest]:
        """The PRs in scope (see the module docstring)."""
        return PullRequest.objects.filter(
            team_id=self.run.team_id, repository_id__in=self.repository_ids
        ).filter(self._opened() | self._merged())

    def totals(self) -> Totals:
        merged = self._merged()
        ai = Q(ai_verdict__is_ai_assisted=True)
        counts = self.pull_requests().aggregate(
            prs=Count("id"),
            merged=Count("id", filter=merged),
            ai_merged=Count("id", filter=merged & ai),
        )
        return Totals(prs=counts["prs"], merged=counts["merged"], ai_merged=counts["ai_merged"])

    def frozen_totals(self) -> Totals:
        """The totals the run's metrics stage recorded with its weekly rows (so a later run
        re-scoring verdicts does not move the headline before it completes); counted now for
        a run that has none."""
        recorded = (self.run.summary or {}).get("totals")
        if not isinstance(recorded, dict):
            return self.totals()
        return Totals(
            prs=int(recorded.get("pull_requests") or 0),
            merged=int(recorded.get("merged") or 0),
            ai_merged=int(recorded.get("ai_assisted_merged") or 0),
        )

    def repository_names(self) -> list[str]:
        # The e-mail job reads the same list inside its one statement
        # (pipeline.stages.email._read_for_sending_sql): keep the two alike.
        from onboarding.models import Repository

        return list(
            Repository.objects.filter(team_id=self.run.team_id, pk__in=self.repository_ids)
            .order_by("full_name")
            .values_list("full_name", flat=True)
        )

    def as_json(self) -> dict:
        return {
            "run": self.run.pk,
            "kind": getattr(self.run, "kind", "onboarding"),
            "repositories": self.repository_names(),
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
            "first_week": self.first_week.isoformat(),
            **self.frozen_totals().as_json(),
        }


def team_scope(team_id: int) -> Scope | None:
    """The scope every screen shows for the team, or None before its first completed run."""
    run = latest_completed_run(team_id)
    return None if run is None else Scope.of_run(run)
