"""`manage.py run` as a user runs it (real processes from the Procfile, on the test database):
a SIGKILLed worker is restarted and says so, the site stays up throughout, and a pipeline started
afterwards completes on the replacement."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from onboarding.models import Repository
from pipeline import transitions
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import BASE_DIR, wait_for
from tests.conftest import test_database_url as database_url

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = "tests.pipeline.fault_stages.quick"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Product:
    process: subprocess.Popen
    log_path: Path
    url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pid_of(self, name: str) -> int:
        """The pid of the latest start of process type ``name``, from run's own output."""
        pids = re.findall(rf"\[run\] {name} (?:started|restarted) \(pid (\d+)", self.log())
        assert pids, self.log()[-3000:]
        return int(pids[-1])

    def answers(self) -> int:
        with urllib.request.urlopen(self.url + "accounts/login/", timeout=10) as response:
            return response.status


@pytest.fixture
def product(transactional_db, tmp_path) -> Iterator[Product]:
    port, demo_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "DATABASE_URL": database_url(),
        "PIPELINE_STAGE_OVERRIDES": ",".join(f"{s}={QUICK}" for s in STAGE_ORDER),
        "WORKER_POLLING_INTERVAL": "0.2",
        "WORKER_CONCURRENCY": "2",
        "WORKER_SYNC_CONCURRENCY": "1",
    }
    log_path = tmp_path / "run.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--demo-github-port",
         str(demo_port)],
        cwd=BASE_DIR,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    product = Product(process, log_path, f"http://127.0.0.1:{port}/")
    try:
        wait_for(
            lambda: "tformance is running at" in product.log() or process.poll() is not None,
            timeout=120,
        )
        assert process.poll() is None, product.log()[-3000:]
        yield product
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute(
                "TRUNCATE procrastinate_events, procrastinate_jobs,"
                " procrastinate_periodic_defers, procrastinate_workers RESTART IDENTITY CASCADE"
            )


def test_a_sigkilled_worker_is_restarted_the_site_stays_up_and_pipelines_complete(product, team):
    killed = product.pid_of("worker")
    os.kill(killed, signal.SIGKILL)

    assert product.answers() == 200
    wait_for(lambda: "worker restarted" in product.log(), timeout=60)
    assert f"worker (pid {killed}) exited with signal SIGKILL" in product.log()
    assert product.pid_of("worker") != killed
    assert product.answers() == 200
    assert product.process.poll() is None

    repository = Repository.objects.create(team=team, github_id=1, full_name="acme/api")
    transitions.start_pipeline(team, [repository.pk])

    def complete() -> bool:
        team.refresh_from_db()
        return team.pipeline_status == PipelineStatus.COMPLETE

    wait_for(complete, timeout=90)


def test_a_worker_that_exits_cleanly_is_restarted_too(product):
    stopped = product.pid_of("worker_sync")
    # Only once its signal handlers are in: during Django's start-up SIGTERM's default action
    # kills the process (seen on a loaded CI machine), which is the SIGKILL test's case.
    wait_for(lambda: f"worker started (pid {stopped})" in product.log(), timeout=60)
    os.kill(stopped, signal.SIGTERM)  # procrastinate's worker exits 0 on SIGTERM

    wait_for(lambda: "worker_sync restarted" in product.log(), timeout=60)
    # Status 0 normally; 1 when a loaded machine makes the stop outlast its graceful timeout
    # (the worker then exits hard). Restarted either way: that is what this proves.
    assert re.search(rf"worker_sync \(pid {stopped}\) exited with status [01]\b", product.log())
    assert product.answers() == 200
