"""A PostgreSQL restart drops every connection, and so every liveness lock, of every live worker
at once: the rescuer must not take that for the death of them all. Two ``manage.py worker``
processes (shipped settings) run against a throwaway cluster that is restarted mid-sync; the
pipeline completes with no rescue (the sync stays in its one job, or hands back to a new one when
procrastinate stopped a worker whose LISTEN connection failed), the sync body runs to its end
once, both workers stay up and hold their locks again, and there is no drift."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from pipeline.execution import HAND_BACK_REASON
from pipeline.status import STAGE_ORDER, PipelineStatus
from pipeline.transitions import WORKER_LOST_MESSAGE
from tests.conftest import BASE_DIR, wait_for
from tests.pipeline.test_postgres_restart import ThrowawayPostgres, postgres  # noqa: F401

pytestmark = pytest.mark.timeout(600)

FAULTS = "tests.pipeline.fault_stages"
SETUP = """
from onboarding.models import Repository, Team
from pipeline import transitions
team = Team.objects.create(name="Restart")
repository = Repository.objects.create(team=team, github_id=1, full_name="restart/repo")
transitions.start_pipeline(team, [repository.pk])
"""
CHECK = """
from pipeline.invariant import find_drift
print("DRIFT", len(find_drift()))
"""


def test_a_postgres_restart_does_not_get_live_workers_rescued(
    postgres: ThrowawayPostgres,  # noqa: F811
    tmp_path,
):
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "tformance_restart_liveness"')
    database_url = postgres.url("tformance_restart_liveness")
    overrides = {stage: f"{FAULTS}.quick" for stage in STAGE_ORDER}
    overrides[PipelineStatus.SYNCING] = f"{FAULTS}.paged"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.base",  # the shipped settings
        "DJANGO_DEBUG": "false",
        "SECRET_KEY": "liveness-restart-test",
        "TOKEN_ENCRYPTION_KEY": "0Qk3dFhSx1e8Yq0VqUf7vXo9s2J1mZr5cA4bT6nW8Lg=",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "DATABASE_URL": database_url,
        "PIPELINE_STAGE_OVERRIDES": ",".join(f"{k}={v}" for k, v in overrides.items()),
        "FAULT_PAGES": "40",
        "FAULT_PAGE_SECONDS": "0.25",
        "PYTHONUNBUFFERED": "1",
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def query(sql: str):
        try:
            with psycopg.connect(database_url, autocommit=True, connect_timeout=3) as conn:
                return conn.execute(sql).fetchone()
        except psycopg.OperationalError:
            return None  # the server is restarting

    def held_locks() -> int:
        row = query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'tformance-worker-liveness:%'"
        )
        return row[0] if row else -1

    manage("migrate", "--noinput")
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "worker", "--concurrency", "2"],
            cwd=BASE_DIR,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for log in logs
    ]
    try:
        wait_for(lambda: held_locks() == 2, timeout=60)
        manage("shell", "-c", SETUP)

        def pages_done() -> int:
            row = query("SELECT (progress ->> 'pages_done')::int FROM pipeline_pipelinerun")
            return (row[0] or 0) if row else 0

        wait_for(lambda: pages_done() >= 3, timeout=60)

        postgres.restart()

        def complete() -> bool:
            row = query("SELECT pipeline_status FROM onboarding_team")
            return bool(row) and row[0] == PipelineStatus.COMPLETE

        wait_for(complete, timeout=180)
        wait_for(lambda: held_locks() == 2, timeout=60)
        assert all(w.poll() is None for w in workers)
        text = "".join(log.read_text(errors="replace") for log in logs)
        assert "rescued job" not in text, text[-4000:]
        # Never superseded (no rescue: checked in the logs above). When a worker's LISTEN
        # connection could not be re-opened while the server was shutting down, procrastinate
        # stopped that worker, and the running sync handed back at its next page
        # (pipeline.execution): then one new job per hand-back, each recorded as such. When the
        # sync's page write failed with the server gone and recording that failure failed too,
        # procrastinate retried the same job, whose begin closed the attempt left running.
        with psycopg.connect(database_url, autocommit=True) as conn:
            outcomes = conn.execute(
                "SELECT outcome, error FROM pipeline_stageattempt WHERE stage = 'syncing'"
                " ORDER BY id"
            ).fetchall()
            (sync_jobs,) = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'pipeline.stage.sync'"
            ).fetchone()
        hand_backs = [o for o in outcomes if o == ("rescheduled", HAND_BACK_REASON)]
        unexpected = [
            (outcome, error)
            for outcome, error in outcomes
            if outcome not in {"rescheduled", "retrying", "succeeded"}
            and (outcome, error) != ("failed", WORKER_LOST_MESSAGE)
        ]
        assert not unexpected, outcomes
        assert len(hand_backs) == len([o for o, _ in outcomes if o == "rescheduled"]), outcomes
        assert outcomes[-1][0] == "succeeded"
        assert sync_jobs == 1 + len(hand_backs), (sync_jobs, outcomes)
        assert query(
            "SELECT (summary ->> 'completions_syncing')::int FROM pipeline_pipelinerun"
        ) == (1,)
        assert "DRIFT 0" in manage("shell", "-c", CHECK)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
