"""The insights stage. (Body delivered by its own issue; the engine tests use their own stages.)"""

from __future__ import annotations

from pipeline.models import PipelineRun


def run(run: PipelineRun) -> dict:
    return {}
