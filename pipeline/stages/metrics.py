"""The metrics stage: weekly delivery metrics per team and per member, computed in PostgreSQL.

Decisions (the dashboard and the insights read these rows):

- Scope: the PRs of the run's repositories (``run.repository_ids``, the team's selection), not
  every repository the team ever synced: the numbers describe what the user asked about. Rows of
  the team that the selection no longer produces are deleted in the same transaction, so the
  table always describes exactly the latest run's selection.
- The window is the run's (``pipeline.scope``): events before ``window_start(run)`` are not
  counted, and the team rows start at the window's first week, so an old PR merged lately does
  not pull the charts' start back to the week it was opened. The PRs counted are those
  ``Scope.pull_requests()`` returns (opened or merged in the window), so the dashboard's totals
  equal the sums of these rows.
- Weeks are ISO weeks (Monday 00:00 UTC). An event counts in the week it happened: a PR counts as
  opened in the week of ``created_at``; merged, cycle time, size, review rounds, reverts and the
  AI share in the week of ``merged_at`` (a merged PR's size and rounds are final); time to first
  review in the week of ``first_review_at`` (a wait is measured when it ends, so a PR still
  waiting cannot shorten this week's median).
- Team rows (``member_login = ''``) are dense: every week from the window's first week to the
  last week with an event has a row, with zero counts and empty medians where nothing
  happened, so charts and trends see quiet weeks instead of skipping them. Member rows exist
  only for weeks in which the member did something.
- Bots (``author_is_bot``) and PRs without an author (deleted accounts) count in the team rows
  (a Copilot agent PR is delivered work) but get no member rows: members are people.
- A PR is AI-assisted when its verdict says so; a PR without a verdict counts as not assisted.

Everything is aggregated by one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` (ordered-set
aggregates with FILTER clauses, GROUPING SETS for team and member rows at once): no PR is loaded
into Python, so memory does not grow with the number of PRs.
"""

from __future__ import annotations

import datetime
import json

from django.db import connection, transaction

from pipeline import progress, scope
from pipeline.models import PipelineRun

# The aggregated columns, in the order the SELECT below produces them.
METRIC_COLUMNS = (
    "prs_opened",
    "prs_merged",
    "ai_prs_merged",
    "ai_share",
    "cycle_time_median_hours",
    "cycle_time_p75_hours",
    "ai_cycle_time_median_hours",
    "human_cycle_time_median_hours",
    "first_review_median_hours",
    "review_rounds_avg",
    "pr_size_median",
    "ai_pr_size_median",
    "human_pr_size_median",
    "reverts",
)

# GROUPING SETS ((week), (week, member)) yields the team row (GROUPING(member) = 1, keyed '')
# and one row per member; a NULL member (bot, no author) is only kept inside the team row.
UPSERT_WEEKS_SQL = f"""
WITH pr AS (
    -- Only what the aggregates read: this is materialised once for the three of them, and a
    -- narrow row keeps it in memory for large teams.
    SELECT
        p.additions + p.deletions AS size,
        p.review_rounds,
        p.is_revert,
        CASE WHEN p.author_is_bot OR p.author_login = '' THEN NULL ELSE p.author_login END
            AS member,
        COALESCE(v.is_ai_assisted, FALSE) AS ai,
        EXTRACT(EPOCH FROM p.merged_at - p.created_at) / 3600.0 AS cycle_hours,
        EXTRACT(EPOCH FROM p.first_review_at - p.created_at) / 3600.0 AS review_wait_hours,
        CASE WHEN p.created_at >= %(window_start)s
            THEN date_trunc('week', p.created_at AT TIME ZONE 'UTC')::date END AS opened_week,
        CASE WHEN p.merged_at >= %(window_start)s
            THEN date_trunc('week', p.merged_at AT TIME ZONE 'UTC')::date END AS merged_week,
        CASE WHEN p.first_review_at >= %(window_start)s
            THEN date_trunc('week', p.first_review_at AT TIME ZONE 'UTC')::date END
            AS reviewed_week
    FROM pipeline_pullrequest p
    LEFT JOIN pipeline_aiverdict v ON v.pull_request_id = p.id
    WHERE p.team_id = %(team_id)s AND p.repository_id = ANY(%(repository_ids)s)
        AND (p.created_at >= %(window_start)s OR p.merged_at >= %(window_start)s)
),
opened AS (
    SELECT
        opened_week AS week,
        CASE WHEN GROUPING(member) = 1 THEN '' ELSE member END AS member_login,
        count(*) AS prs_opened
    FROM pr
    WHERE opened_week IS NOT NULL
    GROUP BY GROUPING SETS ((opened_week), (opened_week, member))
    HAVING GROUPING(member) = 1 OR member IS NOT NULL
),
merged AS (
    SELECT
        merged_week AS week,
        CASE WHEN GROUPING(member) = 1 THEN '' ELSE member END AS member_login,
        count(*) AS prs_merged,
        count(*) FILTER (WHERE ai) AS ai_prs_merged,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_hours) AS cycle_median,
        percentile_cont(0.75) WITHIN GROUP (ORDER BY cycle_hours) AS cycle_p75,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_hours) FILTER (WHERE ai)
            AS ai_cycle_median,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY cycle_hours) FILTER (WHERE NOT ai)
            AS human_cycle_median,
        avg(review_rounds)::float AS review_rounds_avg,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY size) AS size_median,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY size) FILTER (WHERE ai) AS ai_size_median,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY size) FILTER (WHERE NOT ai)
            AS human_size_median,
        count(*) FILTER (WHERE is_revert) AS reverts
    FROM pr
    WHERE merged_week IS NOT NULL
    GROUP BY GROUPING SETS ((merged_week), (merged_week, member))
    HAVING GROUPING(member) = 1 OR member IS NOT NULL
),
reviewed AS (
    SELECT
        reviewed_week AS week,
        CASE WHEN GROUPING(member) = 1 THEN '' ELSE member END AS member_login,
        percentile_cont(0.5) WITHIN GROUP (ORDER BY review_wait_hours) AS review_wait_median
    FROM pr
    WHERE reviewed_week IS NOT NULL
    GROUP BY GROUPING SETS ((reviewed_week), (reviewed_week, member))
    HAVING GROUPING(member) = 1 OR member IS NOT NULL
),
active AS (
    SELECT week, member_login FROM opened
    UNION SELECT week, member_login FROM merged
    UNION SELECT week, member_login FROM reviewed
),
keys AS (
    -- Team rows for every week from the window's first week to the last active one (quiet
    -- weeks too); none at all when nothing happened in the window.
    SELECT generate_series(
               COALESCE(%(first_week)s::date, min(week)), max(week), interval '7 days'
           )::date AS week,
           '' AS member_login
    FROM active
    UNION
    SELECT week, member_login FROM active WHERE member_login <> ''
)
INSERT INTO pipeline_weeklymetric
    (team_id, run_id, week_start, member_login, {", ".join(METRIC_COLUMNS)})
SELECT
    %(team_id)s,
    %(run_id)s,
    k.week,
    k.member_login,
    COALESCE(o.prs_opened, 0),
    COALESCE(m.prs_merged, 0),
    COALESCE(m.ai_prs_merged, 0),
    m.ai_prs_merged::float / NULLIF(m.prs_merged, 0),
    m.cycle_median,
    m.cycle_p75,
    m.ai_cycle_median,
    m.human_cycle_median,
    r.review_wait_median,
    m.review_rounds_avg,
    m.size_median,
    m.ai_size_median,
    m.human_size_median,
    COALESCE(m.reverts, 0)
FROM keys k
LEFT JOIN opened o USING (week, member_login)
LEFT JOIN merged m USING (week, member_login)
LEFT JOIN reviewed r USING (week, member_login)
ON CONFLICT (run_id, week_start, member_login) DO UPDATE SET
    {", ".join(f"{column} = EXCLUDED.{column}" for column in METRIC_COLUMNS)}
RETURNING id, member_login = '' AS is_team_row
"""


def compute_weekly_metrics(
    team_id: int,
    repository_ids: list[int],
    window_start: datetime.datetime | None = None,
    run_id: int | None = None,
) -> dict[str, int]:
    """Write ``run_id``'s weekly rows for ``repository_ids`` from ``window_start`` on (every PR
    when None: the rows then start at the first active week); return the counts.

    The team's other rows are deleted in the same transaction, except those of its latest
    completed run: the dashboard shows them until this run completes (pipeline.scope)."""
    shown = scope.latest_completed_run(team_id)
    keep_run_id = shown.pk if shown is not None and shown.pk != run_id else None
    with transaction.atomic(), connection.cursor() as cursor:
        # Sorting for the ordered-set aggregates stays in memory for large teams; SET LOCAL
        # ends with this transaction and never leaks to the next user of the connection.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(
            UPSERT_WEEKS_SQL,
            {
                "team_id": team_id,
                "run_id": run_id,
                "repository_ids": list(repository_ids),
                "window_start": window_start or datetime.datetime(1970, 1, 5, tzinfo=datetime.UTC),
                "first_week": scope.week_of(window_start) if window_start else None,
            },
        )
        rows = cursor.fetchall()
        kept_ids = [row_id for row_id, _ in rows]
        # Weeks (or members) this run no longer produces (e.g. a re-run after a repository was
        # deselected), and rows of runs nobody shows. Same transaction, so readers never see
        # a half-replaced set.
        cursor.execute(
            "DELETE FROM pipeline_weeklymetric WHERE team_id = %s AND NOT (id = ANY(%s))"
            " AND run_id IS DISTINCT FROM %s",
            [team_id, kept_ids, keep_run_id],
        )
        deleted = cursor.rowcount
        # The totals the dashboard's headline and the e-mail state, frozen with these rows: a
        # later run re-scoring verdicts does not move them while it is in progress.
        if run_id is not None:
            run = PipelineRun.objects.get(pk=run_id)
            totals = scope.Scope.of_run(run).totals().as_json()
            cursor.execute(
                "UPDATE pipeline_pipelinerun SET summary = summary || jsonb_build_object("
                "'totals', %s::jsonb) WHERE id = %s",
                [json.dumps(totals), run_id],
            )
    weeks = sum(1 for _, is_team_row in rows if is_team_row)
    return {"weeks": weeks, "member_weeks": len(rows) - weeks, "rows_deleted": deleted}


def run(run: PipelineRun) -> dict:
    counts = compute_weekly_metrics(
        run.team_id, [int(pk) for pk in run.repository_ids], scope.window_start(run), run.pk
    )
    progress.report(run, weeks_computed=counts["weeks"])
    return counts
