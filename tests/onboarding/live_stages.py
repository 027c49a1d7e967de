"""Stage functions for the live-stream tests, run inside real worker processes (through
PIPELINE_STAGE_OVERRIDES): each reports live counters as it goes, like the real stages."""

from __future__ import annotations

import time

from pipeline.models import PipelineRun
from pipeline.progress import report
from pipeline.status import PipelineStatus

# Long enough for a stream to see the counters move, short enough for a quick test.
STEP_SECONDS = 0.3


def reporting(run: PipelineRun) -> dict:
    if run.stage == PipelineStatus.SYNCING:
        total = len(run.repository_ids)
        for done in range(1, total + 1):
            time.sleep(STEP_SECONDS)
            report(run, repositories_done=done, prs_synced=done * 10)
    elif run.stage == PipelineStatus.LLM_PROCESSING:
        report(run, prs_to_analyse=30, prs_analysed=0)
        time.sleep(STEP_SECONDS)
        report(run, prs_analysed=30)
    elif run.stage == PipelineStatus.COMPUTING_METRICS:
        time.sleep(STEP_SECONDS)
        report(run, weeks_computed=13)
    return {"stage": str(run.stage)}
