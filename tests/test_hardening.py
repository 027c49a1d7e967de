"""Hardening with the shipped settings: secure cookies and HSTS when DEBUG is off, and the
embedded dev mode refusing to listen beyond loopback unless told to."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from onboarding.management.commands.run import DEV_SECRET_KEY, is_loopback

# Runs under settings.base (not settings.test): one secure request to the login page.
PROBE = """
import json
from django.conf import settings
from django.test import Client
response = Client().get("/accounts/login/", secure=True)
cookie = response.cookies["csrftoken"]
print(json.dumps({
    "debug": settings.DEBUG,
    "status": response.status_code,
    "hsts": response.headers.get("Strict-Transport-Security"),
    "csrf_cookie_secure": bool(cookie["secure"]),
    "session_cookie_secure": settings.SESSION_COOKIE_SECURE,
}))
"""


def probe(**env: str) -> dict:
    full_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_DEBUG", "DATABASE_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
    }
    full_env |= {"DJANGO_SETTINGS_MODULE": "settings.base", "ALLOWED_HOSTS": "testserver"}
    full_env |= env
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PROBE],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_production_settings_send_hsts_and_mark_cookies_secure():
    found = probe(
        DJANGO_DEBUG="false",
        SECRET_KEY="a-production-secret",
        # Production mode: a database server of its own (never connected to by this request).
        DATABASE_URL="postgresql://nobody@127.0.0.1:9/none",
        TOKEN_ENCRYPTION_KEY="0Qk3dFhSx1e8Yq0VqUf7vXo9s2J1mZr5cA4bT6nW8Lg=",
    )
    assert found["debug"] is False
    assert found["status"] == 200
    assert found["hsts"] == "max-age=31536000"
    assert found["csrf_cookie_secure"] is True
    assert found["session_cookie_secure"] is True


def test_debug_mode_sends_no_hsts_and_plain_cookies():
    found = probe(
        DJANGO_DEBUG="true",
        DATABASE_URL="postgresql://nobody@127.0.0.1:9/none",
        TOKEN_ENCRYPTION_KEY="0Qk3dFhSx1e8Yq0VqUf7vXo9s2J1mZr5cA4bT6nW8Lg=",
    )
    assert found["debug"] is True
    assert found["hsts"] is None
    assert found["csrf_cookie_secure"] is False


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_hosts_are_recognised(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_embedded_dev_mode_refuses_to_bind_beyond_loopback(host, tmp_path):
    # An empty Procfile: were the refusal missing, the command would fail differently (no
    # 'web' type) instead of starting anything.
    procfile = tmp_path / "Procfile"
    procfile.write_text("")
    with override_settings(DEBUG=True, SECRET_KEY=DEV_SECRET_KEY):
        with pytest.raises(CommandError, match=f"Refusing to listen on {host}"):
            call_command("run", host=host, procfile=str(procfile))
        # Explicitly told: it goes on (and stops at the empty Procfile, before starting).
        with pytest.raises(CommandError, match="has no 'web' process type"):
            call_command("run", host=host, procfile=str(procfile), allow_remote=True)
