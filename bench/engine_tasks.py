"""The two sides of ``bench/engine``, loaded by its worker processes (``engine_settings``).

- ``noop_stage``: the body of every product stage (``PIPELINE_STAGE_OVERRIDES``), so what is
  measured is the engine around it: begin, hand-off transaction, queue, e-mail outbox job.
  The metrics stage's no-op still leaves what the real stage always leaves for a team with no
  PRs (the benchmark's teams have none): the run's frozen totals, all zero. Without them the
  e-mail job would count the run's PRs itself, a fallback production never takes (the metrics
  stage always records them), and that count was an eighth of the workers' Python time.
- ``raw_step``: the baseline, a plain procrastinate chain of ``CHAIN_LENGTH`` no-op jobs, each
  deferring the next the ordinary way (the task's ``defer()`` inside the task, through the
  worker's own connector). Each job passes its finish time to the next one, which adds its
  measured gap to the list it carries on: the last job's arguments hold the gaps of the
  hand-offs before it, so collecting them costs the chain nothing (the benchmark reads them
  from procrastinate_jobs). The hand-off into the last job is not recorded anywhere; the
  product side likewise counts only its stage-to-stage hand-offs (3 of its 4), so both sides
  report 3 gaps per chain.
"""

from __future__ import annotations

import time

from procrastinate.contrib.django import app

# As many jobs as one product pipeline has: four stages and the e-mail job.
CHAIN_LENGTH = 5
RAW_TASK_NAME = "bench.raw_step"


def noop_stage(run) -> dict:
    return {}


def noop_metrics_stage(run) -> dict:
    from pipeline.models import PipelineRun
    from pipeline.scope import Totals

    totals = Totals(prs=0, merged=0, ai_merged=0).as_json()
    PipelineRun.objects.filter(pk=run.pk).update(summary={**(run.summary or {}), "totals": totals})
    return {}


def raw_step(chain: int, step: int, gaps_ms: list, prev_finished: float | None = None) -> None:
    started = time.time()
    if prev_finished is not None:
        gaps_ms = [*gaps_ms, round((started - prev_finished) * 1000, 3)]
    if step < CHAIN_LENGTH:
        app.tasks[RAW_TASK_NAME].defer(
            chain=chain, step=step + 1, gaps_ms=gaps_ms, prev_finished=time.time()
        )


def on_app_ready(ready_app) -> None:
    """PROCRASTINATE_ON_APP_READY: register the raw task when procrastinate's app is built, in
    every process (workers started either way, and the benchmark itself)."""
    ready_app.task(name=RAW_TASK_NAME, queue="default")(raw_step)
