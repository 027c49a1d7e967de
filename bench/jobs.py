"""Job-table size and query times after 100,000 finished jobs, with and without retention
(run through ``bench/jobs``).

Procrastinate keeps every finished job and its events. This fills a scratch database with
``--jobs`` finished stage jobs (three events each: deferred, started, succeeded), spread evenly
over the last ``--days`` days, plus a handful of live ``todo`` jobs, then measures:
- the size of ``procrastinate_jobs`` and ``procrastinate_events`` (tables and indexes);
- the worker's fetch (``procrastinate_fetch_job_v2``, in a rolled-back transaction so every
  call sees the same queue), median and p95 of ``--repeat`` calls;
- the drift check (``pipeline.invariant.find_drift``) and the stalled-job query
  (``pipeline.rescue.stalled_job_ids``), which read the job table too;
then runs the product's retention (``pipeline.retention.delete_finished_jobs`` at the shipped
``PIPELINE_JOB_RETENTION_DAYS``; procrastinate's ``delete_old_jobs`` if it is not there), times
it, VACUUMs, and measures everything again.

Usage: bench/jobs [--jobs 100000] [--days 30] [--repeat 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from scratch import (
    create_scratch_database,
    drop_scratch_database,
    use_scratch_database,
    write_results,
)

SCRATCH_DATABASE = "tformance_bench_jobs"
RESULTS = Path(__file__).resolve().parent / "results" / "jobs.json"


def fill(jobs: int, days: float) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH j AS (
                INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
                SELECT (ARRAY['sync', 'llm', 'default', 'default', 'default'])[1 + g %% 5],
                       (ARRAY['pipeline.stage.sync', 'pipeline.stage.detect',
                              'pipeline.stage.metrics', 'pipeline.stage.insights',
                              'pipeline.outbox.send_email'])[1 + g %% 5],
                       CASE WHEN g %% 5 = 4 THEN jsonb_build_object('outbox_id', g / 5)
                            ELSE jsonb_build_object('run_id', g / 5) END,
                       'succeeded', 1
                  FROM generate_series(0, %(jobs)s - 1) g
                RETURNING id
            )
            INSERT INTO procrastinate_events (job_id, type, at)
            SELECT j.id, e.type::procrastinate_job_event_type,
                   now() - make_interval(secs => %(span)s * (1 - j.rn::float / %(jobs)s))
                         + e.offset_ms * interval '1 millisecond'
              FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM j) j,
                   (VALUES ('deferred', 0), ('started', 5), ('succeeded', 40)) e(type, offset_ms)
            """,
            {"jobs": jobs, "span": days * 86400},
        )
        # A few live jobs for the fetch to find (one per stage queue), as in a running system.
        cursor.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
            " SELECT q, 'pipeline.stage.detect', jsonb_build_object('run_id', -g), 'todo'"
            " FROM generate_series(1, 5) g, unnest(ARRAY['sync', 'llm', 'default']) q"
        )
        cursor.execute("ANALYZE procrastinate_jobs")
        cursor.execute("ANALYZE procrastinate_events")


def sizes() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_total_relation_size('procrastinate_jobs'),"
            " pg_total_relation_size('procrastinate_events'),"
            " (SELECT count(*) FROM procrastinate_jobs),"
            " (SELECT count(*) FROM procrastinate_events)"
        )
        jobs_bytes, events_bytes, jobs, events = cursor.fetchone()
    return {
        "jobs_rows": jobs,
        "events_rows": events,
        "jobs_mb": round(jobs_bytes / 2**20, 2),
        "events_mb": round(events_bytes / 2**20, 2),
    }


def timed(function, repeat: int) -> dict:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(samples[len(samples) // 2], 3),
        "p95_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.95))], 3),
    }


def fetch_once() -> None:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT id FROM procrastinate_fetch_job_v2(ARRAY['llm'], NULL)")
        assert cursor.fetchone()[0] is not None
        transaction.set_rollback(True)


def measure(repeat: int) -> dict:
    from pipeline import invariant, rescue

    return {
        **sizes(),
        "fetch": timed(fetch_once, repeat),
        "drift_check": timed(invariant.find_drift, max(5, repeat // 20)),
        "stalled_jobs": timed(rescue.stalled_job_ids, max(5, repeat // 20)),
        "load": round(os.getloadavg()[0], 2),
    }


def retain() -> tuple[str, int, float]:
    from django.db import connection

    started = time.perf_counter()
    try:
        from pipeline import retention

        deleted = retention.delete_finished_jobs()
        how = "pipeline.retention.delete_finished_jobs"
    except ImportError:
        from pipeline import queue

        deleted = queue.job_manager().delete_old_jobs(nb_hours=7 * 24, include_failed=True)
        how = "JobManager.delete_old_jobs"
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) procrastinate_jobs")
        cursor.execute("VACUUM (ANALYZE) procrastinate_events")
    return how, deleted or 0, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30, help="the jobs span this many days")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    use_scratch_database(create_scratch_database(SCRATCH_DATABASE))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    try:
        fill(args.jobs, args.days)
        before = measure(args.repeat)
        how, deleted, seconds = retain()
        after = measure(args.repeat)
    finally:
        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)

    days = getattr(settings, "PIPELINE_JOB_RETENTION_DAYS", 7)
    print(f"{args.jobs:,} finished jobs over {args.days:g} days; retention: {how}, {days:g} days")
    print(
        f"{'':<18} {'jobs':>8} {'events':>8} {'jobs MB':>8} {'events MB':>9} "
        f"{'fetch p50/p95 ms':>17} {'drift check ms':>15} {'stalled ms':>11} {'load':>5}"
    )
    for label, m in (("without retention", before), ("with retention", after)):
        print(
            f"{label:<18} {m['jobs_rows']:>8,} {m['events_rows']:>8,} {m['jobs_mb']:>8.1f}"
            f" {m['events_mb']:>9.1f}"
            f" {m['fetch']['p50_ms']:>8.2f}/{m['fetch']['p95_ms']:<8.2f}"
            f" {m['drift_check']['p50_ms']:>15.1f} {m['stalled_jobs']['p50_ms']:>11.1f}"
            f" {m['load']:>5}"
        )
    print(f"retention run: {deleted:,} jobs deleted in {seconds:.2f} s")
    write_results(
        args.output,
        "jobs",
        {
            "retention": {"how": how, "days": days, "deleted": deleted, "seconds": seconds},
            "without_retention": before,
            "with_retention": after,
        },
        arguments=vars(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
