"""Test settings: the same database resolution as base (embedded Postgres or DATABASE_URL)."""

from settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
OPENAI_API_KEY = ""
OPENAI_BASE_URL = ""
GITHUB_API_URL = "http://127.0.0.1:9"  # tests point this at their own local servers
TOKEN_ENCRYPTION_KEY = "0Qk3dFhSx1e8Yq0VqUf7vXo9s2J1mZr5cA4bT6nW8Lg="
WHITENOISE_AUTOREFRESH = True
