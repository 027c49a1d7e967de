"""Re-scoring stored PRs when the marker catalogue changes, without re-syncing.

Every verdict records the catalogue version that produced it (``AIVerdict.catalogue_version``).
When the shipped catalogue (``pipeline/catalogue.toml``) has another version, the team's
verdicts are stale: ``rescore_outdated_teams`` starts one ``rescore`` run per such team through
``transitions.start_run`` (contract 3: it starts at the detect stage, then metrics and insights,
and sends no e-mail), so the re-score goes through the same status machine, job invariant and
rescue as any run. The periodic task ``rescore_outdated_catalogue`` (``pipeline.tasks``) calls it
on ``DETECT_RESCORE_CRON``; a deploy with a new catalogue is therefore picked up by the first
tick after the new workers start, with no command to remember.

A team with a run in progress gets a ``skipped`` rescore run recorded by ``start_run`` and is
tried again at the next tick (its verdicts are still stale). Teams that never completed
onboarding are left alone: their onboarding run scores with the new catalogue anyway.
"""

from __future__ import annotations

import logging

from onboarding.models import Team
from pipeline import transitions
from pipeline.errors import InvalidSelection, PipelineNotRetryable
from pipeline.models import AIVerdict, PipelineRun, RunKind
from pipeline.signatures import CATALOGUE_VERSION

logger = logging.getLogger(__name__)


def outdated_team_ids(version: str = CATALOGUE_VERSION) -> list[int]:
    """Teams holding a verdict scored with another catalogue version, no run running."""
    stale = (
        AIVerdict.objects.exclude(catalogue_version=version)
        .values_list("team_id", flat=True)
        .distinct()
    )
    running = PipelineRun.objects.filter(state=PipelineRun.State.RUNNING).values("team_id")
    return sorted(set(stale) - set(running.values_list("team_id", flat=True)))


def rescore_outdated_teams(version: str = CATALOGUE_VERSION) -> list[PipelineRun]:
    """Start a ``rescore`` run for every team whose verdicts are of another catalogue version."""
    started = []
    for team in Team.objects.filter(pk__in=outdated_team_ids(version)):
        try:
            run = transitions.start_run(team, RunKind.RESCORE)
        except (PipelineNotRetryable, InvalidSelection) as exc:
            logger.info("rescore: team %s not re-scored: %s", team.pk, exc)
            continue
        if run.state == PipelineRun.State.RUNNING:
            logger.info(
                "rescore: team %s re-scored with catalogue %s (run %s)", team.pk, version, run.pk
            )
            started.append(run)
    return started


def catalogue_versions(verdicts) -> list[str]:
    """The catalogue versions behind ``verdicts`` (a queryset), most used first."""
    from django.db.models import Count

    rows = (
        verdicts.exclude(catalogue_version="")
        .values("catalogue_version")
        .annotate(n=Count("id"))
        .order_by("-n", "catalogue_version")
    )
    return [row["catalogue_version"] for row in rows]
