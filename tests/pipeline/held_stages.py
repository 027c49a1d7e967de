"""A stage the topology tests hold open inside a real worker process (through
PIPELINE_STAGE_OVERRIDES): for the team named HOLD_TEAM it runs until the file HOLD_RELEASE_FILE
exists (at most HOLD_MAX_SECONDS, 60 by default), so the test releases it on a condition and stays
bounded; for every other team it returns at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.models import PipelineRun
from pipeline.progress import report


def held_for_one_team(run: PipelineRun) -> dict:
    if run.team.name != os.environ.get("HOLD_TEAM"):
        return {"held": False}
    release = Path(os.environ["HOLD_RELEASE_FILE"])
    deadline = time.monotonic() + float(os.environ.get("HOLD_MAX_SECONDS", "60"))
    report(run, message="held by the test")
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return {"held": True, "released": release.exists()}


def reporting_steps(run: PipelineRun) -> dict:
    """Writes progress to the database every STEP_SECONDS (0.5) for STEPS (8) steps: a stage
    that is mid-way, using its connection, when the database goes away."""
    steps = int(os.environ.get("STEPS", "8"))
    for step in range(1, steps + 1):
        time.sleep(float(os.environ.get("STEP_SECONDS", "0.5")))
        report(run, message=f"step {step} of {steps}")
    return {"steps": steps}
