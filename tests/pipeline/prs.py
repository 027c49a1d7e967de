"""Building synced PRs and their verdicts for the metrics, insights and e-mail tests."""

from __future__ import annotations

import datetime

from django.db.models import Max

from onboarding.models import Repository, Team
from pipeline.models import AIVerdict, PipelineRun, PullRequest
from pipeline.status import PipelineStatus

UTC = datetime.UTC


def at(day: str, hour: int = 0, minute: int = 0, second: int = 0) -> datetime.datetime:
    """An aware UTC datetime from 'YYYY-MM-DD' and a time of day."""
    date = datetime.date.fromisoformat(day)
    return datetime.datetime(date.year, date.month, date.day, hour, minute, second, tzinfo=UTC)


def make_pr(
    repository: Repository,
    number: int,
    *,
    author: str = "alice",
    created: datetime.datetime,
    merged: datetime.datetime | None = None,
    first_review: datetime.datetime | None = None,
    additions: int = 10,
    deletions: int = 0,
    review_rounds: int = 0,
    is_revert: bool = False,
    bot: bool = False,
    ai: bool | None = None,
    tools: list[str] | None = None,
) -> PullRequest:
    """A PR of ``repository``; ``ai`` None means no verdict row at all (not yet analysed)."""
    pr = PullRequest.objects.create(
        team_id=repository.team_id,
        repository=repository,
        number=number,
        title=f"PR {number}",
        state=PullRequest.State.MERGED if merged else PullRequest.State.OPEN,
        author_login=author,
        author_is_bot=bot,
        created_at=created,
        updated_at=merged or created,
        merged_at=merged,
        closed_at=merged,
        first_review_at=first_review,
        additions=additions,
        deletions=deletions,
        review_rounds=review_rounds,
        is_revert=is_revert,
    )
    if ai is not None:
        AIVerdict.objects.create(
            pull_request=pr,
            team_id=repository.team_id,
            is_ai_assisted=ai,
            source=AIVerdict.Source.SIGNATURE if ai else AIVerdict.Source.NONE,
            tools=tools or [],
        )
    return pr


def run_start_after_history(team: Team) -> datetime.datetime:
    """A run start one day after the team's latest PR event: the run's window
    (``pipeline.scope``, SYNC_WINDOW_DAYS before its start) then holds the fixture's PRs
    whatever today's date is."""
    latest = PullRequest.objects.filter(team=team).aggregate(
        created=Max("created_at"), merged=Max("merged_at")
    )
    moments = [m for m in latest.values() if m is not None]
    if not moments:
        return datetime.datetime.now(UTC)
    return max(moments) + datetime.timedelta(days=1)


def make_run(
    team: Team,
    repositories: list[Repository],
    stage: str = PipelineStatus.COMPUTING_METRICS,
    started_at: datetime.datetime | None = None,
) -> PipelineRun:
    return PipelineRun.objects.create(
        team=team,
        stage=stage,
        repository_ids=[r.pk for r in repositories],
        started_at=started_at or run_start_after_history(team),
    )
