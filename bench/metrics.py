"""Benchmark of the weekly-metrics stage over synthetic PRs (run through ``bench/metrics``).

Builds a scratch database on the embedded PostgreSQL (or on the server of DATABASE_URL), fills it
with synthetic PRs and verdicts by ``INSERT ... SELECT generate_series`` (server side, seconds),
then runs the real stage function and prints its wall time and this process's peak memory for
each size. The work happens in the database, so the process's memory must not grow with the
number of PRs. Target (issue 4): under 10 s for 1,000,000 PRs on this 2-core machine.

Usage: bench/metrics [--sizes 100000,1000000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from scratch import (
    create_scratch_database,
    drop_scratch_database,
    peak_rss_mb,
    use_scratch_database,
)

SCRATCH_DATABASE = "tformance_bench_metrics"
TARGET_SECONDS = 10.0
WEEKS = 52
AUTHORS = 200
REPOSITORIES = 10


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# Synthetic history over WEEKS weeks: AUTHORS authors (every 40th a bot), REPOSITORIES
# repositories, ~85% merged after 1-200 h, ~80% reviewed, sizes 1-2,000 lines, 3% reverts, and
# a verdict for every PR (~30% AI-assisted). setseed() makes every run build the same data.
FILL_SQL = """
SELECT setseed(0.42);
INSERT INTO pipeline_pullrequest (
    team_id, repository_id, number, node_id, title, body, state, is_draft, author_login,
    author_is_bot, head_branch, labels, created_at, updated_at, merged_at, closed_at,
    first_review_at, additions, deletions, changed_files, review_rounds, is_revert, synced_at)
SELECT
    %(team_id)s, (%(repository_ids)s::bigint[])[1 + i %% %(repositories)s], i, '', 'PR ' || i, '',
    CASE WHEN merged THEN 'merged' ELSE 'open' END, FALSE,
    'dev-' || (i %% %(authors)s), (i %% %(authors)s) %% 40 = 0, '', '[]'::jsonb,
    created, created, CASE WHEN merged THEN created + cycle END,
    CASE WHEN merged THEN created + cycle END,
    CASE WHEN reviewed THEN created + cycle * 0.3 END,
    (random() * 1500)::int, (random() * 500)::int, 1 + (random() * 30)::int,
    (random() * 3)::int, random() < 0.03, now()
FROM (
    SELECT i,
           timestamptz '2026-01-05' - (random() * %(weeks)s * 7) * interval '1 day' AS created,
           random() < 0.85 AS merged,
           random() < 0.80 AS reviewed,
           (1 + random() * 199) * interval '1 hour' AS cycle
    FROM generate_series(1, %(prs)s) AS i
) AS synthetic;
INSERT INTO pipeline_aiverdict (
    pull_request_id, team_id, is_ai_assisted, source, tools, signature_hits, catalogue_version,
    llm_assisted, llm_tools, llm_confidence, llm_reason, llm_content_hash, llm_prompt_version,
    llm_error, updated_at)
SELECT id, team_id, ai, CASE WHEN ai THEN 'signature' ELSE 'none' END,
       CASE WHEN ai THEN '["Claude Code"]'::jsonb ELSE '[]'::jsonb END, '[]'::jsonb, 'bench',
       NULL, '[]'::jsonb, NULL, '', '', '', '', now()
FROM (SELECT id, team_id, random() < 0.3 AS ai FROM pipeline_pullrequest
      WHERE team_id = %(team_id)s) AS prs;
"""


def bench_size(prs: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from onboarding.models import Repository, Team
    from pipeline.models import PipelineRun
    from pipeline.stages import metrics
    from pipeline.status import PipelineStatus

    team = Team.objects.create(name=f"bench {prs}")
    repositories = [
        Repository.objects.create(team=team, github_id=i, full_name=f"bench/repo-{i}")
        for i in range(REPOSITORIES)
    ]
    repository_ids = [r.pk for r in repositories]
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            FILL_SQL,
            {
                "team_id": team.pk,
                "repository_ids": repository_ids,
                "repositories": REPOSITORIES,
                "authors": AUTHORS,
                "weeks": WEEKS,
                "prs": prs,
            },
        )
        # Synced PRs are normally vacuumed (hint bits set, statistics known) long before a
        # large team's metrics run; without this the first pass pays for freshly written pages.
        # VACUUM cannot run in a multi-statement string: one statement each, in autocommit.
        cursor.execute("VACUUM (ANALYZE) pipeline_pullrequest")
        cursor.execute("VACUUM (ANALYZE) pipeline_aiverdict")
    fill_seconds = time.perf_counter() - started
    run = PipelineRun.objects.create(
        team=team,
        stage=PipelineStatus.COMPUTING_METRICS,
        repository_ids=repository_ids,
        started_at=timezone.now(),
    )
    rss_before = current_rss_mb()
    started = time.perf_counter()
    counts = metrics.run(run)
    seconds = time.perf_counter() - started
    # A second run over the same data: the idempotent re-run replaces every row.
    started = time.perf_counter()
    metrics.run(run)
    rerun_seconds = time.perf_counter() - started
    run.state = PipelineRun.State.COMPLETE
    run.save(update_fields=["state"])
    return {
        "prs": prs,
        "fill_seconds": fill_seconds,
        "seconds": seconds,
        "rerun_seconds": rerun_seconds,
        "counts": counts,
        "rss_before_mb": rss_before,
        "rss_after_mb": current_rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    use_scratch_database(create_scratch_database(SCRATCH_DATABASE))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"weekly metrics stage, {WEEKS} weeks, {AUTHORS} authors, {REPOSITORIES} repositories")
    print(
        f"{'PRs':>10} {'fill s':>8} {'stage s':>8} {'re-run s':>9} {'weeks':>6} "
        f"{'member-weeks':>13} {'RSS before MB':>14} {'RSS after MB':>13} {'peak RSS MB':>12}"
    )
    results = []
    for prs in sizes:
        result = bench_size(prs)
        results.append(result)
        print(
            f"{prs:>10,} {result['fill_seconds']:>8.1f} {result['seconds']:>8.2f} "
            f"{result['rerun_seconds']:>9.2f} {result['counts']['weeks']:>6} "
            f"{result['counts']['member_weeks']:>13} {result['rss_before_mb']:>14.1f} "
            f"{result['rss_after_mb']:>13.1f} {result['peak_rss_mb']:>12.1f}"
        )
    largest = results[-1]
    ratio = largest["seconds"] / TARGET_SECONDS
    print(
        f"stage over {largest['prs']:,} PRs: {largest['seconds']:.2f} s "
        f"(target < {TARGET_SECONDS:.0f} s; ratio to target {ratio:.2f})"
    )
    growth = [
        f"{r['rss_after_mb'] - r['rss_before_mb']:+.1f} MB at {r['prs']:,} PRs" for r in results
    ]
    print(f"process memory growth during the stage: {', '.join(growth)} (target: flat)")
    # Other work on the machine (tests, other benchmarks) shows up in these seconds directly.
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not args.keep:
        from django.db import connections

        connections.close_all()
        drop_scratch_database(SCRATCH_DATABASE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
