"""The real sync stage inside real worker processes, talking to the demo GitHub over HTTP: the
pipeline moves on, a spent budget reschedules the job for after the reset, a revoked token fails
once."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from procrastinate.contrib.django.models import ProcrastinateJob

from pipeline import transitions
from pipeline.models import PullRequest, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import wait_for
from tests.pipeline.sync_helpers import add_repositories, connect, graphql_requests, in_window

pytestmark = pytest.mark.django_db(transaction=True)


QUICK = "tests.pipeline.fault_stages.quick"


def worker_env(**extra: str) -> dict[str, str]:
    """The real sync stage; every later stage replaced by a quick one (they have their own
    tests), so these tests see the sync's effect on the pipeline."""
    later = [s for s in STAGE_ORDER if s != PipelineStatus.SYNCING]
    return {"PIPELINE_STAGE_OVERRIDES": ",".join(f"{s}={QUICK}" for s in later), **extra}


def sql(query: str, params: list):
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else None


def team_status(team) -> str:
    team.refresh_from_db()
    return team.pipeline_status


def test_a_worker_runs_the_sync_stage_and_the_pipeline_moves_on(
    start_worker, team, demo_github_small
):
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small)
    start_worker(worker_env())

    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE, timeout=60)
    expected = len(in_window(demo_github_small, 90))
    assert PullRequest.objects.filter(team=team).count() == expected
    attempt = StageAttempt.objects.get(run=run, stage=PipelineStatus.SYNCING)
    assert attempt.outcome == StageAttempt.Outcome.SUCCEEDED
    assert attempt.counts["prs_synced"] == expected
    assert attempt.counts["repositories_synced"] == len(repositories)


def test_a_worker_reschedules_on_a_spent_budget_and_finishes_after_the_reset(
    start_worker, team, demo_github_small
):
    # The budget resets in an hour: no wall-clock race with a slow worker start. The test then
    # makes the reset happen (fresh budget, and the clock "reaches" the job's time).
    demo_github_small.rate_limited(remaining=0, reset_in=3600, resource="graphql")
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api"])
    start_worker(worker_env())

    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    rescheduled = wait_for(
        lambda: StageAttempt.objects.filter(
            run=run, stage=PipelineStatus.SYNCING, outcome=StageAttempt.Outcome.RESCHEDULED
        ).first(),
        timeout=60,
    )
    run.refresh_from_db()
    [(scheduled_at,)] = sql(
        "SELECT scheduled_at FROM procrastinate_jobs WHERE id = %s AND status = 'todo'",
        [run.current_job_id],
    )
    assert scheduled_at >= rescheduled.finished_at + datetime.timedelta(minutes=59)
    assert team_status(team) == PipelineStatus.SYNCING

    demo_github_small.reset()
    sql("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE id = %s", [run.current_job_id])

    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE, timeout=60)
    outcomes = list(
        StageAttempt.objects.filter(run=run, stage=PipelineStatus.SYNCING)
        .order_by("started_at")
        .values_list("outcome", flat=True)
    )
    assert outcomes == [StageAttempt.Outcome.RESCHEDULED, StageAttempt.Outcome.SUCCEEDED]
    assert PullRequest.objects.count() == len(in_window(demo_github_small, 90, ["api"]))


def test_a_worker_fails_a_revoked_token_once_with_the_reconnect_message(
    start_worker, team, demo_github_small
):
    demo_github_small.unauthorized()
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api"])
    worker = start_worker(worker_env(PIPELINE_STAGE_MAX_RETRIES="3"))

    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    wait_for(lambda: team_status(team) == PipelineStatus.FAILED, timeout=60)
    team.refresh_from_db()
    assert team.pipeline_error == (
        "GitHub rejected the team's token (bad credentials): reconnect GitHub."
    )
    assert StageAttempt.objects.filter(run=run).count() == 1  # no retry storm
    assert len(graphql_requests(demo_github_small)) == 1
    # An expected failure: one WARNING line with the run id, no traceback (also not from
    # procrastinate's own record of the job's end, written after ours).
    job_id = StageAttempt.objects.get(run=run).job_id
    wait_for(lambda: ProcrastinateJob.objects.get(pk=job_id).status == "failed")
    wait_for(lambda: f"run {run.pk}" in worker.log())
    log = worker.log()
    assert "Traceback" not in log
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len([line for line in warnings if f"run {run.pk}" in line]) == 1
    assert not [line for line in log.splitlines() if " ERROR " in line]
