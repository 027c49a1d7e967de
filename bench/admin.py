"""The operators' job list (``pipeline.admin_jobs``) over a big job table (run through
``bench/admin``).

A scratch database gets ``--jobs`` finished stage jobs (one deferred event each) spread over
``--teams`` teams' runs, plus a few live ones (todo, doing on a dead worker, failed). Then the
admin changelist is fetched as a logged-in superuser (Django's test client, the real URL and
templates), unfiltered and with each filter, ``--repeat`` times each: median time and SQL
statements per page. The baseline, in the same run and database: what procrastinate's own job
admin does per page, a full ``COUNT(*)`` plus the page query with its events prefetched.

Target: every page well under a second at 1,000,000 jobs, with the same number of statements
whatever the table size (no per-row queries), and no full count.

Usage: bench/admin [--jobs 1000000] [--teams 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from scratch import (
    create_scratch_database,
    drop_scratch_database,
    use_scratch_database,
    write_results,
)

SCRATCH_DATABASE = "tformance_bench_admin"
RESULTS = Path(__file__).resolve().parent / "results" / "admin.json"
TARGET_PAGE_SECONDS = 1.0

FILL_SQL = [
    """
    INSERT INTO onboarding_team (name, created_at, pipeline_status, pipeline_error)
    SELECT 'team ' || g, now(), 'complete', '' FROM generate_series(1, %(teams)s) g
    """,
    """
    INSERT INTO pipeline_pipelinerun (team_id, kind, state, stage, repository_ids, started_at,
                                      finished_at, error, progress, summary)
    SELECT id, 'onboarding', 'complete', 'complete', '[]', now(), now(), '', '{}', '{}'
      FROM onboarding_team
    """,
    """
    INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args, status, attempts)
    SELECT (ARRAY['sync', 'llm', 'default', 'default'])[g %% 4 + 1],
           (ARRAY['pipeline.stage.sync', 'pipeline.stage.detect', 'pipeline.stage.metrics',
                  'pipeline.stage.insights'])[g %% 4 + 1],
           0, jsonb_build_object('run_id', (SELECT min(id) FROM pipeline_pipelinerun)
                                           + (g / 4) %% %(teams)s),
           'succeeded', 1
      FROM generate_series(1, %(jobs)s) g
    """,
    """
    INSERT INTO procrastinate_events (job_id, type, at)
    SELECT id, 'deferred', now() - make_interval(secs => (%(jobs)s - id)) FROM procrastinate_jobs
    """,
    # A few live ones, the operator's business: waiting, stalled (dead worker), failed.
    """
    INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')
    """,
    """
    UPDATE procrastinate_jobs
       SET status = (CASE WHEN id %% 3 = 0 THEN 'todo' WHEN id %% 3 = 1 THEN 'failed'
                          ELSE 'doing' END)::procrastinate_job_status,
           worker_id = CASE WHEN id %% 3 = 2 THEN (SELECT max(id) FROM procrastinate_workers) END
     WHERE id > %(jobs)s - 30
    """,
    "ANALYZE",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    url = create_scratch_database(SCRATCH_DATABASE)
    use_scratch_database(url)
    os.environ["ALLOWED_HOSTS"] = "testserver"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, connections
    from django.db.models import Prefetch
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment
    from procrastinate.contrib.django import models as procrastinate_models

    from pipeline import queue
    from pipeline.status import PipelineStatus

    call_command("migrate", verbosity=0)
    setup_test_environment(debug=False)  # responses carry their template context
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for statement in FILL_SQL:
                cursor.execute(statement, {"jobs": args.jobs, "teams": args.teams})
        fill_seconds = time.perf_counter() - started
        print(f"{args.jobs:,} jobs over {args.teams:,} teams written in {fill_seconds:.1f} s")

        user = get_user_model().objects.create_superuser("bench", "b@example.com", "x" * 12)
        client = Client()
        client.force_login(user)
        page_url = "/admin/procrastinate/procrastinatejob/"
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(id) FROM onboarding_team")
            (team_id,) = cursor.fetchone()
        filters = {
            "unfiltered": {},
            "stalled": {"liveness": "stalled"},
            "stalled or failed": {"liveness": "requeueable"},
            "status todo": {"status__exact": "todo"},
            "team": {"team": str(team_id)},
            "stage detect": {"stage": queue.STAGE_JOBS[PipelineStatus.LLM_PROCESSING].task_name},
            "queue llm": {"queue": "llm"},
            "with housekeeping": {"jobs": "all"},
        }
        client.get(page_url)  # warm-up: templates, URL resolvers, the first connection
        pages = {}
        for name, params in filters.items():
            times, statements, rows = [], 0, 0
            for _ in range(args.repeat):
                with CaptureQueriesContext(connection) as queries:
                    t0 = time.perf_counter()
                    response = client.get(page_url, params)
                    times.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: HTTP {response.status_code}")
                statements = len(queries)
                rows = len(response.context["cl"].result_list)
                counted = any(
                    "COUNT(" in q["sql"].upper() and "EXPLAIN" not in q["sql"].upper()
                    for q in queries
                )
            pages[name] = {
                "median_seconds": round(statistics.median(times), 4),
                "statements": statements,
                "rows_shown": rows,
                "exact_count_run": counted,
            }
            print(
                f"  {name:<18} {pages[name]['median_seconds'] * 1000:8.1f} ms,"
                f" {statements} statements, {rows} rows, exact count: {counted}",
                flush=True,
            )

        # Baseline: the stock admin's per-page work (full count + page with events prefetched).
        job = procrastinate_models.ProcrastinateJob
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            job.objects.count()
            list(
                job.objects.order_by("-id").prefetch_related(
                    Prefetch(
                        "procrastinateevent_set",
                        queryset=procrastinate_models.ProcrastinateEvent.objects.order_by("-at"),
                    )
                )[:100]
            )
            times.append(time.perf_counter() - t0)
        baseline = round(statistics.median(times), 4)
        print(f"  stock admin's count + page: {baseline * 1000:.1f} ms")
        load = os.getloadavg()[0]
    finally:
        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)

    worst = max(p["median_seconds"] for p in pages.values())
    print()
    print(
        f"job list at {args.jobs:,} jobs: slowest filter {worst * 1000:.0f} ms (target <="
        f" {TARGET_PAGE_SECONDS * 1000:.0f} ms; ratio {worst / TARGET_PAGE_SECONDS:.2f});"
        f" unfiltered {pages['unfiltered']['median_seconds'] * 1000:.0f} ms vs the stock admin's"
        f" count + page {baseline * 1000:.0f} ms"
        f" ({pages['unfiltered']['median_seconds'] / max(baseline, 1e-9):.2f}x); load {load:.1f}"
    )
    write_results(
        args.output,
        "admin",
        {
            "fill_seconds": round(fill_seconds, 1),
            "pages": pages,
            "baseline_stock_admin_seconds": baseline,
            "load": round(load, 2),
            "targets": {"page_seconds": TARGET_PAGE_SECONDS},
        },
        arguments=vars(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
