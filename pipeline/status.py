"""Pipeline status values and stage order, shared by the web side and the pipeline."""

from __future__ import annotations

from django.db import models


class PipelineStatus(models.TextChoices):
    NOT_STARTED = "not_started", "Not started"
    SYNCING = "syncing", "Syncing pull requests"
    LLM_PROCESSING = "llm_processing", "Detecting AI-assisted work"
    COMPUTING_METRICS = "computing_metrics", "Computing weekly metrics"
    COMPUTING_INSIGHTS = "computing_insights", "Computing insights"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"


# The running stages, in the order the pipeline goes through them.
STAGE_ORDER: tuple[str, ...] = (
    PipelineStatus.SYNCING,
    PipelineStatus.LLM_PROCESSING,
    PipelineStatus.COMPUTING_METRICS,
    PipelineStatus.COMPUTING_INSIGHTS,
)
RUNNING_STATUSES = frozenset(STAGE_ORDER)
TERMINAL_STATUSES = frozenset(
    {PipelineStatus.NOT_STARTED, PipelineStatus.COMPLETE, PipelineStatus.FAILED}
)


def next_status(stage: str) -> str:
    """The status that follows ``stage``: the next stage, or ``complete`` after the last one."""
    index = STAGE_ORDER.index(stage)
    if index + 1 < len(STAGE_ORDER):
        return STAGE_ORDER[index + 1]
    return PipelineStatus.COMPLETE
