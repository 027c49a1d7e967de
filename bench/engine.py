"""Engine benchmark (issue 9): the product's transactional hand-off against plain procrastinate.

Both sides run in the same invocation, on the same scratch database, through the same kind of
worker processes (``manage.py worker`` when it exists, else ``manage.py procrastinate worker``,
settings ``bench/engine_settings.py``):

- product: the onboarding pipeline (4 stages + the completion e-mail job, 5 jobs) with no-op
  stage bodies (``PIPELINE_STAGE_OVERRIDES``), started with ``transitions.start_pipeline``;
- raw: a chain of 5 no-op procrastinate jobs, each deferring the next (``engine_tasks``).

Figures (product, raw, product/raw):
- idle hand-off p50/p95: pipelines run one after another; a hand-off is the gap between one
  stage's recorded finish and the next stage's recorded start (product: ``StageAttempt``
  finished_at -> next started_at; raw: wall clock at the end of job n -> at the start of job
  n+1, both taken in the job bodies), 3 per pipeline on each side;
- hand-off p50/p95 with 100 pipelines in flight (all started in one transaction);
- throughput: 1,000 pipelines started in one transaction, run by 2 workers at concurrency 2,
  then 8; jobs/s = 5 x pipelines / (first job start -> last job success, procrastinate's own
  event times). Each side runs twice, in the order raw, product, product, raw, and its rate is
  all its jobs over all its seconds (the tables grow phase by phase: see ``main``).

Targets (issue 9): idle hand-off p50 <= 1.2x raw; throughput >= 0.8x raw.
Prints a table and writes ``bench/results/engine.json`` (with the load average of each figure).

Usage: bench/engine [--idle 40] [--inflight 100] [--throughput 1000] [--concurrency 2,8]
                    [--workers 2] [--keep]
Smoke pass (CI): bench/engine --idle 2 --inflight 3 --throughput 5 --concurrency 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

from scratch import BASE_DIR, create_scratch_database, drop_scratch_database, use_scratch_database

SCRATCH_DATABASE = "tformance_bench_engine"
BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "engine.json"
TARGET_HANDOFF_RATIO = 1.2
TARGET_THROUGHPUT_RATIO = 0.8
JOBS_PER_PIPELINE = 5


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def load() -> float:
    return round(os.getloadavg()[0], 2)


def worker_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="engine_settings",
        PYTHONPATH=os.pathsep.join([str(BENCH_DIR), str(BASE_DIR)]),
        LOG_LEVEL="WARNING",
        DJANGO_DEBUG="false",
    )
    return env


def worker_command(concurrency: int) -> list[str]:
    python = sys.executable
    manage = str(BASE_DIR / "manage.py")
    if (BASE_DIR / "pipeline" / "management" / "commands" / "worker.py").exists():
        return [python, manage, "worker", "--concurrency", str(concurrency)]
    return [python, manage, "procrastinate", "worker", "--concurrency", str(concurrency)]


class Workers:
    """``count`` worker processes at ``concurrency``; ready once each registered itself."""

    def __init__(self, url: str, count: int, concurrency: int) -> None:
        self.url, self.count, self.concurrency = url, count, concurrency
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> Workers:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM procrastinate_workers")
            (before,) = cursor.fetchone()
        env = worker_env(self.url)
        for _ in range(self.count):
            self.processes.append(
                subprocess.Popen(worker_command(self.concurrency), cwd=BASE_DIR, env=env)
            )
        deadline = time.monotonic() + 120
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM procrastinate_workers")
                (registered,) = cursor.fetchone()
            if registered >= before + self.count:
                break
            dead = [p.returncode for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"workers did not start (exit codes {dead})")
            time.sleep(0.1)
        # Let the workers finish connecting (LISTEN, pools) before anything is measured.
        time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        from django.db import connection

        # Workers unregister on a clean stop; drop rows of any that did not.
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM procrastinate_workers")


def max_job_id() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM procrastinate_jobs")
        return cursor.fetchone()[0]


def bench_task_names() -> list[str]:
    from engine_tasks import RAW_TASK_NAME

    from pipeline import queue

    return [RAW_TASK_NAME, queue.EMAIL_JOB.task_name] + [
        spec.task_name for spec in queue.STAGE_JOBS.values()
    ]


def wait_finished(after_id: int, jobs: int, timeout: float) -> None:
    """Until ``jobs`` benchmark jobs with id > ``after_id`` have finished (raises on failure)."""
    from django.db import connection

    deadline = time.monotonic() + timeout
    names = bench_task_names()
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'),"
                " count(*) FILTER (WHERE status IN ('failed', 'cancelled', 'aborted'))"
                " FROM procrastinate_jobs WHERE id > %s AND task_name = ANY(%s)",
                [after_id, names],
            )
            succeeded, failed = cursor.fetchone()
        if failed:
            raise RuntimeError(f"{failed} benchmark jobs failed (see the worker logs above)")
        if succeeded >= jobs:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {succeeded}/{jobs} jobs finished")
        # The figures come from the jobs' own event times, so polling late costs them nothing;
        # polling often costs both sides database time (a count over the phase's jobs).
        time.sleep(0.02 if jobs <= JOBS_PER_PIPELINE else 0.2)


_team_counter = 0


def make_teams(count: int) -> list[tuple]:
    """``count`` teams, each with one admin (the e-mail's recipient) and one repository."""
    from django.contrib.auth import get_user_model

    from onboarding.models import Membership, Repository, Team

    global _team_counter
    first = _team_counter
    _team_counter += count
    teams = Team.objects.bulk_create([Team(name=f"bench {first + i}") for i in range(count)])
    users = get_user_model().objects.bulk_create(
        [
            get_user_model()(
                username=f"bench{first + i}", email=f"admin{first + i}@example.com", password="!"
            )
            for i in range(count)
        ]
    )
    Membership.objects.bulk_create(
        [
            Membership(team=team, user=user, role=Membership.Role.ADMIN)
            for team, user in zip(teams, users, strict=True)
        ]
    )
    repositories = Repository.objects.bulk_create(
        [
            Repository(team=team, github_id=1, full_name=f"bench/repo{first + i}")
            for i, team in enumerate(teams)
        ]
    )
    return list(zip(teams, repositories, strict=True))


def start_product(teams: list[tuple]) -> list[int]:
    """Start one pipeline per team, all in one transaction (visible to workers at once)."""
    from django.db import transaction

    from pipeline import transitions

    with transaction.atomic():
        return [transitions.start_pipeline(team, [repo.pk]).pk for team, repo in teams]


def start_raw(chains: int, first_chain: int) -> None:
    from django.db import transaction
    from engine_tasks import RAW_TASK_NAME
    from procrastinate.contrib.django import app

    with transaction.atomic():
        app.tasks[RAW_TASK_NAME].batch_defer(
            *[{"chain": first_chain + i, "step": 1, "gaps_ms": []} for i in range(chains)]
        )


def product_gaps(run_ids: list[int]) -> list[float]:
    from pipeline.models import StageAttempt
    from pipeline.status import STAGE_ORDER

    attempts: dict[int, dict[str, StageAttempt]] = {}
    for attempt in StageAttempt.objects.filter(
        run_id__in=run_ids, outcome=StageAttempt.Outcome.SUCCEEDED
    ):
        attempts.setdefault(attempt.run_id, {})[attempt.stage] = attempt
    gaps = []
    for by_stage in attempts.values():
        for before, after in zip(STAGE_ORDER, STAGE_ORDER[1:], strict=False):
            if before in by_stage and after in by_stage:
                delta = by_stage[after].started_at - by_stage[before].finished_at
                gaps.append(delta.total_seconds() * 1000)
    return gaps


def raw_gaps(after_id: int) -> list[float]:
    from django.db import connection
    from engine_tasks import CHAIN_LENGTH, RAW_TASK_NAME

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT args -> 'gaps_ms' FROM procrastinate_jobs WHERE id > %s AND task_name = %s"
            " AND (args ->> 'step')::int = %s",
            [after_id, RAW_TASK_NAME, CHAIN_LENGTH],
        )
        rows = cursor.fetchall()
    gaps: list[float] = []
    for (value,) in rows:
        gaps.extend(json.loads(value) if isinstance(value, str) else value)
    return gaps


def job_window(after_id: int) -> tuple[int, float]:
    """(jobs, seconds from the first job's start to the last job's success) since ``after_id``."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(DISTINCT j.id),"
            " extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'succeeded')"
            "  - min(e.at) FILTER (WHERE e.type = 'started'))"
            " FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id"
            " WHERE j.id > %s AND j.task_name = ANY(%s)",
            [after_id, bench_task_names()],
        )
        jobs, seconds = cursor.fetchone()
    return jobs, float(seconds or 0)


def run_product(count: int, *, one_by_one: bool, timeout: float) -> dict:
    teams = make_teams(count)
    before = max_job_id()
    load_before = load()
    run_ids: list[int] = []
    if one_by_one:
        for team in teams:
            mark = max_job_id()
            run_ids += start_product([team])
            wait_finished(mark, JOBS_PER_PIPELINE, timeout)
    else:
        run_ids = start_product(teams)
        wait_finished(before, JOBS_PER_PIPELINE * count, timeout)
    jobs, seconds = job_window(before)
    return {
        "pipelines": count,
        "gaps_ms": product_gaps(run_ids),
        "jobs": jobs,
        "seconds": seconds,
        "load": max(load_before, load()),
    }


_chain_counter = 0


def run_raw(count: int, *, one_by_one: bool, timeout: float) -> dict:
    global _chain_counter
    before = max_job_id()
    load_before = load()
    if one_by_one:
        for _ in range(count):
            mark = max_job_id()
            start_raw(1, _chain_counter)
            _chain_counter += 1
            wait_finished(mark, JOBS_PER_PIPELINE, timeout)
    else:
        start_raw(count, _chain_counter)
        _chain_counter += count
        wait_finished(before, JOBS_PER_PIPELINE * count, timeout)
    jobs, seconds = job_window(before)
    return {
        "pipelines": count,
        "gaps_ms": raw_gaps(before),
        "jobs": jobs,
        "seconds": seconds,
        "load": max(load_before, load()),
    }


def figure(name: str, product: float | None, raw: float | None, unit: str, load_avg: float):
    ratio = (product / raw) if product is not None and raw else None
    return {
        "figure": name,
        "product": product,
        "raw": raw,
        "ratio": ratio,
        "unit": unit,
        "load": load_avg,
    }


def handoff_figures(label: str, product: dict, raw: dict) -> list[dict]:
    load_avg = max(product["load"], raw["load"])
    return [
        figure(
            f"{label} hand-off p{q}",
            percentile(product["gaps_ms"], q),
            percentile(raw["gaps_ms"], q),
            "ms",
            load_avg,
        )
        for q in (50, 95)
    ]


def combined(first: dict, second: dict) -> dict:
    """Two runs of one side as one: all their jobs over all their seconds."""
    return {
        "pipelines": first["pipelines"] + second["pipelines"],
        "gaps_ms": first["gaps_ms"] + second["gaps_ms"],
        "jobs": first["jobs"] + second["jobs"],
        "seconds": first["seconds"] + second["seconds"],
        "load": max(first["load"], second["load"]),
        "runs": [
            {"jobs": run["jobs"], "seconds": run["seconds"], "load": run["load"]}
            for run in (first, second)
        ],
    }


def rate(side: dict) -> float | None:
    return side["jobs"] / side["seconds"] if side["seconds"] else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=40, help="pipelines run one after another")
    parser.add_argument("--inflight", type=int, default=100, help="pipelines in flight at once")
    parser.add_argument("--throughput", type=int, default=1000, help="pipelines started at once")
    parser.add_argument("--concurrency", default="2,8", help="worker concurrency of throughput")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per phase at most")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    url = create_scratch_database(SCRATCH_DATABASE)
    sys.path.insert(0, str(BENCH_DIR))
    os.environ["DJANGO_SETTINGS_MODULE"] = "engine_settings"
    use_scratch_database(url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = datetime.datetime.now(datetime.UTC)
    figures: list[dict] = []
    raw_phases: dict[str, dict] = {}
    try:
        print(
            f"engine benchmark: {args.workers} workers ({' '.join(worker_command(2)[2:-2])}),"
            f" scratch database, load {load()}",
            flush=True,
        )
        with Workers(url, args.workers, 2):
            # Warm-up, not measured: imports, plans, caches on both sides.
            run_raw(2, one_by_one=True, timeout=args.timeout)
            run_product(2, one_by_one=True, timeout=args.timeout)
            # Alternate sides so that a change in the machine's load hits both.
            raw = run_raw(args.idle, one_by_one=True, timeout=args.timeout)
            product = run_product(args.idle, one_by_one=True, timeout=args.timeout)
            figures += handoff_figures("idle", product, raw)
            raw_phases["idle"] = {"raw": raw, "product": product}
            print(f"  idle done (load {load()})", flush=True)
            product = run_product(args.inflight, one_by_one=False, timeout=args.timeout)
            raw = run_raw(args.inflight, one_by_one=False, timeout=args.timeout)
            figures += handoff_figures(f"{args.inflight} in flight", product, raw)
            raw_phases["inflight"] = {"raw": raw, "product": product}
            print(f"  in flight done (load {load()})", flush=True)
        for concurrency in concurrencies:
            with Workers(url, args.workers, concurrency):
                # Raw, product, product, raw: every phase leaves 5,000 finished jobs and their
                # events behind, and each later phase runs a little slower on the grown
                # tables (measured: 5-16%), so the side measured second would carry all of it.
                first_raw = run_raw(args.throughput, one_by_one=False, timeout=args.timeout)
                product = run_product(args.throughput, one_by_one=False, timeout=args.timeout)
                product = combined(
                    product, run_product(args.throughput, one_by_one=False, timeout=args.timeout)
                )
                raw = combined(
                    first_raw, run_raw(args.throughput, one_by_one=False, timeout=args.timeout)
                )
            figures.append(
                figure(
                    f"throughput {args.throughput} pipelines, {args.workers}x concurrency "
                    f"{concurrency}",
                    rate(product),
                    rate(raw),
                    "jobs/s",
                    max(product["load"], raw["load"]),
                )
            )
            raw_phases[f"throughput_c{concurrency}"] = {"raw": raw, "product": product}
            print(f"  throughput at concurrency {concurrency} done (load {load()})", flush=True)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_scratch_database(SCRATCH_DATABASE)

    print()
    print(f"{'figure':<48} {'product':>10} {'raw':>10} {'ratio':>7} {'unit':>7} {'load':>5}")
    for row in figures:
        product_text = f"{row['product']:.1f}" if row["product"] is not None else "n/a"
        raw_text = f"{row['raw']:.1f}" if row["raw"] is not None else "n/a"
        ratio_text = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "n/a"
        print(
            f"{row['figure']:<48} {product_text:>10} {raw_text:>10} {ratio_text:>7}"
            f" {row['unit']:>7} {row['load']:>5}"
        )
    idle_p50 = figures[0]["ratio"]
    throughputs = [row["ratio"] for row in figures if row["unit"] == "jobs/s" and row["ratio"]]
    print()
    if idle_p50 is not None:
        print(f"idle hand-off p50: {idle_p50:.2f}x raw (target <= {TARGET_HANDOFF_RATIO}x)")
    if throughputs:
        print(
            f"throughput: {min(throughputs):.2f}x raw at worst (target >= "
            f"{TARGET_THROUGHPUT_RATIO}x)"
        )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        name: {
            side: {key: value for key, value in data.items() if key != "gaps_ms"}
            | {"handoffs": len(data["gaps_ms"])}
            for side, data in phase.items()
        }
        for name, phase in raw_phases.items()
    }
    output.write_text(
        json.dumps(
            {
                "benchmark": "engine",
                "started_at": started.isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
                "worker_command": ["manage.py", *worker_command(2)[2:-2]],
                "load_at_start": list(os.getloadavg()),
                "arguments": vars(args),
                "figures": figures,
                "phases": summary,
                "targets": {
                    "idle_handoff_p50_ratio_max": TARGET_HANDOFF_RATIO,
                    "throughput_ratio_min": TARGET_THROUGHPUT_RATIO,
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
