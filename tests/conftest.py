"""Shared fixtures: teams and users, and real procrastinate worker processes on the test
database (no in-memory connector, no mocked database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from psycopg.conninfo import make_conninfo

from onboarding.models import Membership, Repository, Team

BASE_DIR = Path(__file__).resolve().parent.parent

# Fixtures for the local servers the tests talk to (each speaks the real protocol): the bundled
# demo GitHub, an OpenAI-compatible LLM server, an SMTP sink, the ASGI server for live streams.
pytest_plugins = [
    "tests.fixtures.github",
    "tests.fixtures.llm",
    "tests.fixtures.email",
    "tests.fixtures.live",
]


def wait_for(predicate: Callable[[], object], timeout: float = 30, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s: {predicate.__doc__ or predicate}")
        time.sleep(interval)


def finish_stages(run, stages=None, counts: dict | None = None) -> None:
    """Hand ``stages`` of ``run`` off in this process, as a worker would (default: all four,
    which completes the run and writes its e-mail outbox row)."""
    from pipeline import transitions
    from pipeline.status import STAGE_ORDER

    for stage in STAGE_ORDER if stages is None else stages:
        attempt = transitions.begin_stage(run.pk, stage, job_id=None)
        transitions.complete_stage(attempt.pk, counts or {})


def test_database_url() -> str:
    """A libpq conninfo for the test database, for processes the tests start."""
    s = connection.settings_dict
    return make_conninfo(
        "",
        dbname=s["NAME"],
        host=s["HOST"] or None,
        port=str(s["PORT"]) if s["PORT"] else None,
        user=s["USER"] or None,
        password=s["PASSWORD"] or None,
    )


@pytest.fixture
def empty_queue_after(transactional_db) -> Iterator[None]:
    """For transactional tests that queue jobs without a worker: procrastinate's tables are
    not Django's, so the test flush leaves their rows; this empties them afterwards."""
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE procrastinate_events, procrastinate_jobs, procrastinate_periodic_defers"
            " RESTART IDENTITY CASCADE"
        )


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="Acme")


@pytest.fixture
def admin_user(team):
    user = get_user_model().objects.create_user(
        username="ada", email="ada@example.com", password="correct horse battery"
    )
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def repositories(team) -> list[Repository]:
    return [
        Repository.objects.create(team=team, github_id=1000 + i, full_name=f"acme/repo-{i}")
        for i in range(3)
    ]


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def kill(self) -> None:
        """SIGKILL: no clean-up, no job status written, the job stays in ``doing``."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM, without waiting: the worker hands its stages back and exits."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def start_worker(transactional_db, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``manage.py worker`` processes on the test database, with the shipped
    worker, liveness and rescue settings.

    ``env`` adds environment variables (stage overrides, retry settings, ...). Workers defer no
    periodic task unless ``periodic`` is set: the shipped schedules follow the wall clock (and
    procrastinate defers a tick missed by up to ten minutes at start), so the hourly retention
    or the 02:00 nightly batch would otherwise start work in the middle of whichever test runs
    then. Tests of those tasks defer their jobs themselves."""
    workers: list[WorkerProcess] = []

    def start(
        env: dict[str, str] | None = None, queues: str = "", periodic: bool = False
    ) -> WorkerProcess:
        full_env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "settings.test",
            "DATABASE_URL": test_database_url(),
            "PYTHONUNBUFFERED": "1",
            "PIPELINE_RETRY_BASE_SECONDS": "0",
            **(env or {}),
        }
        log_path = tmp_path / f"worker-{len(workers)}.log"
        args = [sys.executable, "manage.py", "worker", "--concurrency", "4"]
        if queues:
            args += ["--queues", queues]
        if not periodic:
            args.append("--no-periodic")
        process = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=full_env,
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
        )
        worker = WorkerProcess(process, log_path)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    with connection.cursor() as cursor:
        # Worker processes wrote these outside the test's reach; flush does not know them.
        cursor.execute(
            "TRUNCATE procrastinate_events, procrastinate_jobs, procrastinate_periodic_defers,"
            " procrastinate_workers, pipeline_workerliveness RESTART IDENTITY CASCADE"
        )
