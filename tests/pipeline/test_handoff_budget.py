"""The hand-off's fixed cost: what a stage job spends on the database outside its body.

A transactional hand-off is one lock, one compare-and-swap, one history row, one job insert and
one NOTIFY; beginning a stage is one lock, one history row and one NOTIFY. These tests count
the SQL statements and the transactions (commits) one stage job issues on Django's connection
around a stage body that itself issues none, so a change that adds a round trip to every job
fails here, deterministically, instead of showing up later as a slower benchmark.
(procrastinate's own fetch and finish of the job run on the worker's pool and are not counted:
they are the same for the raw procrastinate baseline.)"""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from procrastinate.contrib.django import app
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job

from pipeline import queue, tasks, transitions
from pipeline.models import PipelineRun, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus

pytestmark = pytest.mark.django_db(transaction=True)

# Statements a middle stage job issues outside its body, and commits. Beginning: lock the team,
# read the run and the stage's earlier attempts, insert the attempt, NOTIFY. Hand-off: lock the
# team, read the attempt with its run, defer the next job, update attempt, run and team, NOTIFY.
STATEMENT_BUDGET = 12
TRANSACTION_BUDGET = 2
# The last stage also reads the recipients, writes the e-mail outbox row (insert, job id) and,
# once the run ended, looks for a nightly batch step waiting on it (pipeline.nightly).
LAST_STAGE_STATEMENT_BUDGET = STATEMENT_BUDGET + 4


def context_for(run: PipelineRun, job_id: int | None = None) -> JobContext:
    run.refresh_from_db()
    spec = queue.STAGE_JOBS[run.stage]
    job = Job(
        id=job_id or run.current_job_id,
        queue=spec.queue,
        lock=None,
        queueing_lock=None,
        task_name=spec.task_name,
        task_kwargs={"run_id": run.pk},
        attempts=0,
    )
    return JobContext(app=app, job=job, start_timestamp=0.0, abort_reason=lambda: None)


def measured_stage_job(run: PipelineRun) -> tuple[list[str], int]:
    """Run the current stage's job as a worker would; (SQL statements, commits)."""
    context = context_for(run)
    stage = run.stage
    wrapper = connections["default"]
    with (
        mock.patch.object(wrapper, "commit", wraps=wrapper.commit) as commit,
        CaptureQueriesContext(connection) as queries,
    ):
        tasks.run_stage_job(context, stage, run.pk)
    statements = [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]
    return statements, commit.call_count


@pytest.fixture
def quick_stages(settings):
    settings.PIPELINE_STAGE_OVERRIDES = {
        stage: "tests.pipeline.fault_stages.quick" for stage in STAGE_ORDER
    }
    yield
    with connection.cursor() as cursor:
        # procrastinate's tables are not Django-managed: flush leaves their rows behind.
        cursor.execute("TRUNCATE procrastinate_events, procrastinate_jobs RESTART IDENTITY CASCADE")


def test_a_stage_job_spends_a_fixed_small_number_of_statements_and_two_transactions(
    quick_stages, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    measured = []
    for _ in STAGE_ORDER:
        measured.append(measured_stage_job(run))

    run.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE  # the hand-offs really happened
    assert list(run.attempts.values_list("outcome", flat=True)) == [
        StageAttempt.Outcome.SUCCEEDED
    ] * len(STAGE_ORDER)
    for (statements, commits), stage in zip(measured, STAGE_ORDER, strict=True):
        budget = (
            LAST_STAGE_STATEMENT_BUDGET
            if stage == PipelineStatus.COMPUTING_INSIGHTS
            else STATEMENT_BUDGET
        )
        assert len(statements) <= budget, (stage, statements)
        assert commits == TRANSACTION_BUDGET, stage
        # One job insert and one NOTIFY of ours per stage start and per hand-off.
        assert sum("pg_notify" in s for s in statements) == 2, statements
        # The next stage's job, or the last stage's e-mail job.
        assert sum("procrastinate_defer_jobs" in s for s in statements) == 1, statements


def test_a_stale_duplicate_job_costs_one_short_transaction(
    quick_stages, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    run.refresh_from_db()
    context = context_for(run, job_id=run.current_job_id + 1000)  # not the run's current job
    wrapper = connections["default"]
    with (
        mock.patch.object(wrapper, "commit", wraps=wrapper.commit) as commit,
        CaptureQueriesContext(connection) as queries,
    ):
        tasks.run_stage_job(context, PipelineStatus.SYNCING, run.pk)

    assert commit.call_count == 1
    statements = [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(statements) == 2, statements  # lock the team, read the run: then nothing
    assert not run.attempts.exists()
