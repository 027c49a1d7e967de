"""manage.py run: the whole product on one machine.

Starts (or joins) the embedded PostgreSQL, applies migrations, starts the bundled demo GitHub
when no real GitHub credentials are configured, a procrastinate worker and the ASGI web server
(uvicorn: the live progress stream needs ASGI), prints where to go, and stops everything on
Ctrl-C. Child processes inherit DATABASE_URL, so they all use the same database server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from onboarding.models import Membership, Team

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"


def _interrupt(signum, frame) -> None:
    # SIGTERM (e.g. from a process manager) stops everything like Ctrl-C does.
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run web server, worker and (without GitHub credentials) the demo GitHub."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--demo-github-port", type=int, default=int(os.environ.get("DEMO_GITHUB_PORT", "8765"))
        )

    def handle(self, *args, host: str, port: int, demo_github_port: int, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.children: list[subprocess.Popen] = []
        signal.signal(signal.SIGTERM, _interrupt)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "settings.base"}
        manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
        try:
            use_demo = not (settings.GITHUB_TOKEN or settings.GITHUB_OAUTH_CLIENT_ID)
            if use_demo:
                demo_url = f"http://127.0.0.1:{demo_github_port}/api/v3"
                env["DEMO_GITHUB_URL"] = demo_url
                self._spawn(manage + ["demo_github", "--port", str(demo_github_port)], env)
                self._wait_for_http(demo_url.rsplit("/api/v3", 1)[0] + "/api/v3/rate_limit")
            self._spawn(manage + ["procrastinate", "worker"], env)
            self._spawn(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "settings.asgi:application",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    # Open SSE streams would otherwise hold shutdown forever.
                    "--timeout-graceful-shutdown",
                    "3",
                    "--no-access-log",
                ],
                env,
            )
            url = f"http://{host}:{port}/"
            self._wait_for_http(url + "accounts/login/")
            self.stdout.write(self.style.SUCCESS(f"\ntformance is running at {url}"))
            if settings.EMBEDDED_MODE and settings.DEBUG:
                self._ensure_demo_login()
                self.stdout.write(f"  log in as {DEMO_USERNAME} / {DEMO_PASSWORD} (or sign up)")
            if use_demo:
                self.stdout.write(
                    "  no GitHub credentials set: choose 'Use the demo organisation' to connect"
                    " the bundled demo GitHub"
                )
            self.stdout.write(f"  admin: {url}admin/   e-mails: {settings.EMAIL_FILE_PATH}")
            self.stdout.write("  Ctrl-C stops everything\n")
            while all(child.poll() is None for child in self.children):
                time.sleep(0.5)
            self.stderr.write("a process stopped; shutting down")
        except KeyboardInterrupt:
            self.stdout.write("\nstopping...")
        finally:
            self._stop_children()

    def _spawn(self, command: list[str], env: dict) -> None:
        self.children.append(subprocess.Popen(command, env=env, cwd=settings.BASE_DIR))

    def _wait_for_http(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=1)
                return
            except urllib.error.HTTPError:
                return  # it answers; a 401/404 is still an answer
            except OSError:
                if any(child.poll() is not None for child in self.children):
                    raise RuntimeError(f"a process exited while waiting for {url}") from None
                time.sleep(0.2)
        raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")

    def _ensure_demo_login(self) -> None:
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(
                username=DEMO_USERNAME, defaults={"email": "demo@localhost"}
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
                team = Team.objects.create(name="Demo team")
                Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)

    def _stop_children(self) -> None:
        # A second Ctrl-C or SIGTERM (terminals and process managers often send more than one)
        # must not cut the clean shutdown short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
