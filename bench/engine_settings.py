"""Settings of the worker processes ``bench/engine`` starts (``DJANGO_SETTINGS_MODULE=
engine_settings`` with bench/ on PYTHONPATH): the product's settings, plus the raw procrastinate
chain task of the baseline (registered when procrastinate's app is built, so whichever worker
command runs it knows it), no-op stage bodies (the metrics one records the zero totals the real
stage records for a team with no PRs), and an e-mail backend that sends nothing.

Everything else (database connections, worker defaults, retry strategy, queues) is the shipped
configuration: the benchmark measures the engine as it runs in production.
"""

import os

os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
os.environ.setdefault("TOKEN_ENCRYPTION_KEY", "Zm9yLWJlbmNoLW9ubHktbm90LWEtcmVhbC1rZXktMDA=")

from settings.base import *  # noqa: E402, F403

PROCRASTINATE_ON_APP_READY = "engine_tasks.on_app_ready"
PIPELINE_STAGE_OVERRIDES = {
    "syncing": "engine_tasks.noop_stage",
    "llm_processing": "engine_tasks.noop_stage",
    "computing_metrics": "engine_tasks.noop_metrics_stage",
    "computing_insights": "engine_tasks.noop_stage",
}
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
