"""manage.py run: the whole product on one machine, as production runs it.

Starts (or joins) the embedded PostgreSQL, then the process types of the ``Procfile`` (the one
place they are written down: release, web, one worker per queue class), plus the bundled demo
GitHub when no real GitHub credentials are configured. A child that exits, whatever its status,
is restarted with backoff and the output says so (see ``onboarding.supervisor``): a dead worker
never takes the web server down. Ctrl-C (or SIGTERM) stops everything. Child processes inherit
DATABASE_URL (or the embedded server's URL), so they all use the same database server.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from onboarding.models import Membership, Team
from onboarding.supervisor import Supervisor, child_env, read_procfile

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password"
# One-shot process types: run to completion before the others start.
ONE_SHOT_TYPES = {"release"}
# settings/base.py's fallback while DEBUG is on.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-not-for-production"


def dev_mode() -> bool:
    return bool(settings.DEBUG) or settings.SECRET_KEY == DEV_SECRET_KEY


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _interrupt(signum, frame) -> None:
    # SIGTERM (e.g. from a process manager) and SIGINT (Ctrl-C) stop everything.
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Run the Procfile's processes (and, without GitHub credentials, the demo GitHub)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--demo-github-port", type=int, default=int(os.environ.get("DEMO_GITHUB_PORT", "8765"))
        )
        parser.add_argument(
            "--procfile", default=str(Path(settings.BASE_DIR) / "Procfile"), help="Procfile path"
        )
        parser.add_argument(
            "--allow-remote",
            action="store_true",
            default=os.environ.get("ALLOW_REMOTE_DEV", "").lower() in {"1", "true", "yes"},
            help="in embedded dev mode, bind a non-loopback HOST anyway (ALLOW_REMOTE_DEV=true)",
        )

    def handle(self, *args, host: str, port: int, demo_github_port: int, procfile: str, **opts):
        if dev_mode() and not is_loopback(host) and not opts.get("allow_remote"):
            # DEBUG pages, a published SECRET_KEY and the demo / demo-password login: nothing
            # anyone else on the network should reach.
            raise CommandError(
                f"Refusing to listen on {host}: in embedded dev mode (DEBUG on, the dev "
                "SECRET_KEY, the demo / demo-password login) tformance binds loopback only. "
                "Use HOST=127.0.0.1, or pass --allow-remote (ALLOW_REMOTE_DEV=true) if you "
                "really mean it."
            )
        types = read_procfile(Path(procfile))
        if not any(t.name == "web" for t in types):
            raise CommandError(f"{procfile} has no 'web' process type")
        # Set explicitly, SIGINT too: started as a background job of a non-interactive shell,
        # Python inherits SIGINT ignored, so a Ctrl-C to the process group stopped the children
        # (they install their own handlers) and this supervisor restarted them.
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "settings.base"),
            "HOST": host,
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        self.supervisor = Supervisor(self._say, Path(settings.BASE_DIR))
        try:
            for one_shot in (t for t in types if t.name in ONE_SHOT_TYPES):
                self._say(f"{one_shot.name}: {one_shot.command}")
                done = subprocess.run(
                    ["/bin/sh", "-c", f"exec {one_shot.command}"],
                    env=child_env(env),
                    cwd=settings.BASE_DIR,
                )
                if done.returncode != 0:
                    raise CommandError(f"{one_shot.name} failed with status {done.returncode}")
            use_demo = not (settings.GITHUB_TOKEN or settings.GITHUB_OAUTH_CLIENT_ID)
            if use_demo:
                demo_url = f"http://127.0.0.1:{demo_github_port}/api/v3"
                env["DEMO_GITHUB_URL"] = demo_url
                self.supervisor.start(
                    "demo_github", f"python manage.py demo_github --port {demo_github_port}", env
                )
                self._wait_for_http(demo_url + "/rate_limit")
            for process_type in types:
                if process_type.name not in ONE_SHOT_TYPES:
                    self.supervisor.start(process_type.name, process_type.command, env)
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
            self.stdout.write("  a process that stops is restarted; Ctrl-C stops everything\n")
            self.stdout.flush()
            while True:
                self.supervisor.check()
                time.sleep(0.2)
        except KeyboardInterrupt:
            self.stdout.write("\nstopping...")
        finally:
            self._stop_children()

    def _say(self, message: str) -> None:
        self.stderr.write(f"[run] {message}")
        self.stderr.flush()

    def _wait_for_http(self, url: str, timeout: float = 60) -> None:
        """Wait for ``url`` to answer, restarting children meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=5)
                return
            except urllib.error.HTTPError:
                return  # it answers; a 401/404 is still an answer
            except OSError:
                self.supervisor.check()
                time.sleep(0.2)
        raise CommandError(f"{url} did not answer within {timeout:.0f}s")

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
        if hasattr(self, "supervisor"):
            self.supervisor.stop()
