"""The stage functions, one module each. A stage takes the run and returns its counts (a small
dict stored in the stage's history row). Stages are idempotent: a re-run after a crash upserts
what it writes and never duplicates.

``PIPELINE_STAGE_OVERRIDES`` (a setting, ``stage=dotted.path`` pairs in the environment variable
of the same name) replaces a stage function; the engine's fault tests use it to run their own
stages inside a real worker process.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.utils.module_loading import import_string

from pipeline.status import PipelineStatus

StageFunction = Callable[..., dict]

STAGE_FUNCTIONS: dict[str, str] = {
    PipelineStatus.SYNCING: "pipeline.stages.sync.run",
    PipelineStatus.LLM_PROCESSING: "pipeline.stages.detect.run",
    PipelineStatus.COMPUTING_METRICS: "pipeline.stages.metrics.run",
    PipelineStatus.COMPUTING_INSIGHTS: "pipeline.stages.insights.run",
}


def stage_function(stage: str) -> StageFunction:
    overrides = getattr(settings, "PIPELINE_STAGE_OVERRIDES", {}) or {}
    return import_string(overrides.get(stage) or STAGE_FUNCTIONS[stage])
