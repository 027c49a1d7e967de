"""Test settings: the same database resolution as base (embedded Postgres or DATABASE_URL).

Worker subprocesses started by the tests use these settings too; values a test needs to change
in such a subprocess are read from the environment here.
"""

import os

# Against a separate server (DATABASE_URL) the base settings run as in production and require
# a secret key; tests and their worker processes use a fixed throwaway one.
os.environ.setdefault("SECRET_KEY", "test-only-secret-key")

from settings.base import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = os.environ.get(
    "TEST_EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend"
)
OPENAI_API_KEY = os.environ.get("TEST_OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("TEST_OPENAI_BASE_URL", "")
# Tests point this at their own local servers; port 9 (discard) refuses anything else.
GITHUB_API_URL = os.environ.get("TEST_GITHUB_API_URL", "http://127.0.0.1:9")
TOKEN_ENCRYPTION_KEY = "0Qk3dFhSx1e8Yq0VqUf7vXo9s2J1mZr5cA4bT6nW8Lg="
PIPELINE_RETRY_BASE_SECONDS = int(os.environ.get("PIPELINE_RETRY_BASE_SECONDS", "0"))
WHITENOISE_AUTOREFRESH = True

# Tests serve plain HTTP on 127.0.0.1 (browser tests included): cookies marked Secure would not
# come back. tests/test_hardening.py checks the shipped production values in a subprocess.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
