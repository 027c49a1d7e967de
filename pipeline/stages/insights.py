"""The insights stage: gathers a team's facts from the weekly rows and a few aggregates computed
in PostgreSQL (one row each, never the PRs themselves), runs the rules of
``pipeline.insight_rules`` and stores their insights for the run.

The facts cover the same PRs as the metrics stage: the run's scope (``pipeline.scope``: its
repositories, PRs opened or merged in its window; merged means merged in the window). Like the
weekly rows, each set of insights belongs to its run: computing them replaces the team's
previous insights in one transaction, except those of the latest completed run, which the
dashboard shows (filtered by run) until this run completes.
"""

from __future__ import annotations

import datetime

from django.db import connection, transaction
from django.db.models import Sum

from pipeline import insight_rules, scope
from pipeline.insight_rules import PERIOD_WEEKS, TeamFacts
from pipeline.models import Insight, PipelineRun, WeeklyMetric

# Medians over the whole window (AI against the rest) and per period (the last PERIOD_WEEKS
# weeks against the PERIOD_WEEKS before them). An event counts in the period it happened in,
# like in the weekly rows: reviews by first_review_at, merges by merged_at.
FACTS_SQL = """
WITH pr AS (
    SELECT
        CASE WHEN p.merged_at >= %(window_start)s THEN p.merged_at END AS merged_at,
        CASE WHEN p.first_review_at >= %(window_start)s THEN p.first_review_at END
            AS first_review_at,
        p.additions + p.deletions AS size,
        COALESCE(v.is_ai_assisted, FALSE) AS ai,
        CASE WHEN p.merged_at >= %(window_start)s
            THEN EXTRACT(EPOCH FROM p.merged_at - p.created_at) / 3600.0 END AS cycle_hours,
        EXTRACT(EPOCH FROM p.first_review_at - p.created_at) / 3600.0 AS wait_hours
    FROM pipeline_pullrequest p
    LEFT JOIN pipeline_aiverdict v ON v.pull_request_id = p.id
    WHERE p.team_id = %(team_id)s AND p.repository_id = ANY(%(repository_ids)s)
        AND (p.created_at >= %(window_start)s OR p.merged_at >= %(window_start)s)
)
SELECT
    count(*),
    count(*) FILTER (WHERE merged_at IS NOT NULL AND ai),
    count(*) FILTER (WHERE merged_at IS NOT NULL AND NOT ai),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_hours) FILTER (WHERE ai),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_hours) FILTER (WHERE NOT ai),
    count(*) FILTER (WHERE first_review_at >= %(recent)s AND first_review_at < %(end)s),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_hours)
        FILTER (WHERE first_review_at >= %(recent)s AND first_review_at < %(end)s),
    count(*) FILTER (WHERE first_review_at >= %(previous)s AND first_review_at < %(recent)s),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY wait_hours)
        FILTER (WHERE first_review_at >= %(previous)s AND first_review_at < %(recent)s),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY size)
        FILTER (WHERE merged_at >= %(recent)s AND merged_at < %(end)s),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY size)
        FILTER (WHERE merged_at >= %(previous)s AND merged_at < %(recent)s)
FROM pr
"""

TOOLS_SQL = """
SELECT tool, count(DISTINCT v.id) AS prs
FROM pipeline_aiverdict v
JOIN pipeline_pullrequest p ON p.id = v.pull_request_id
CROSS JOIN LATERAL jsonb_array_elements_text(v.tools) AS tool
WHERE p.team_id = %(team_id)s AND p.repository_id = ANY(%(repository_ids)s) AND v.is_ai_assisted
    AND (p.created_at >= %(window_start)s OR p.merged_at >= %(window_start)s)
GROUP BY tool
ORDER BY prs DESC, tool
LIMIT 5
"""

AI_PRS_SQL = """
SELECT count(*)
FROM pipeline_aiverdict v
JOIN pipeline_pullrequest p ON p.id = v.pull_request_id
WHERE p.team_id = %(team_id)s AND p.repository_id = ANY(%(repository_ids)s) AND v.is_ai_assisted
    AND (p.created_at >= %(window_start)s OR p.merged_at >= %(window_start)s)
"""


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)


def gather_facts(
    team_id: int,
    repository_ids: list[int],
    window_start: datetime.datetime | None = None,
    run_id: int | None = None,
) -> TeamFacts:
    """The team's facts: sums of the weekly rows written by the metrics stage, and one-row
    aggregates for what weekly medians cannot be combined into (medians over many weeks)."""
    weeks = WeeklyMetric.objects.filter(team_id=team_id, member_login="")
    if run_id is not None:
        weeks = weeks.filter(run_id=run_id)
    facts = TeamFacts(weeks=weeks.count())
    facts.last_week = weeks.order_by("-week_start").values_list("week_start", flat=True).first()
    if facts.last_week is None:
        recent_start = previous_start = end = _midnight(datetime.date(1970, 1, 5))
    else:
        end = _midnight(facts.last_week + datetime.timedelta(weeks=1))
        recent_start = end - datetime.timedelta(weeks=PERIOD_WEEKS)
        previous_start = recent_start - datetime.timedelta(weeks=PERIOD_WEEKS)
        totals = weeks.aggregate(merged=Sum("prs_merged"), ai=Sum("ai_prs_merged"))
        facts.prs_merged, facts.ai_prs_merged = totals["merged"] or 0, totals["ai"] or 0
        for period, start, stop in (
            (facts.recent, recent_start, end),
            (facts.previous, previous_start, recent_start),
        ):
            sums = weeks.filter(week_start__gte=start.date(), week_start__lt=stop.date()).aggregate(
                merged=Sum("prs_merged"), ai=Sum("ai_prs_merged")
            )
            period.merged, period.ai_merged = sums["merged"] or 0, sums["ai"] or 0

    params = {
        "window_start": window_start or _midnight(datetime.date(1970, 1, 5)),
        "team_id": team_id,
        "repository_ids": list(repository_ids),
        "recent": recent_start,
        "previous": previous_start,
        "end": end,
    }
    with connection.cursor() as cursor:
        cursor.execute(FACTS_SQL, params)
        (
            facts.prs,
            facts.cycle_ai_prs,
            facts.cycle_human_prs,
            facts.ai_cycle_median_hours,
            facts.human_cycle_median_hours,
            facts.recent.reviewed,
            facts.recent.review_wait_median_hours,
            facts.previous.reviewed,
            facts.previous.review_wait_median_hours,
            facts.recent.size_median,
            facts.previous.size_median,
        ) = cursor.fetchone()
        cursor.execute(TOOLS_SQL, params)
        facts.tools = [(tool, prs) for tool, prs in cursor.fetchall()]
        cursor.execute(AI_PRS_SQL, params)
        (facts.ai_prs,) = cursor.fetchone()
    return facts


def run(run: PipelineRun) -> dict:
    facts = gather_facts(
        run.team_id, [int(pk) for pk in run.repository_ids], scope.window_start(run), run.pk
    )
    drafts = insight_rules.build_insights(facts)
    shown = scope.latest_completed_run(run.team_id)
    with transaction.atomic():
        # The latest completed run's insights stay on the dashboard until this run completes.
        stale = Insight.objects.filter(team_id=run.team_id)
        if shown is not None and shown.pk != run.pk:
            stale = stale.exclude(run_id=shown.pk)
        stale.delete()
        Insight.objects.bulk_create(
            Insight(
                team_id=run.team_id,
                run=run,
                kind=draft.kind,
                headline=draft.headline,
                detail=draft.detail,
                severity=draft.severity,
                numbers=draft.numbers,
                position=position,
            )
            for position, draft in enumerate(drafts)
        )
    return {
        "insights": len(drafts),
        "warnings": sum(1 for d in drafts if d.severity == insight_rules.WARNING),
    }
