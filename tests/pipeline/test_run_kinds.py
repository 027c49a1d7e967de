"""Run kinds (onboarding, nightly, re-score), cancel and restart, in-process: where each kind
starts, what it queues and sends, and that the status/queue invariant holds after each."""

from __future__ import annotations

import json

import pytest
from django.db import connection

from pipeline import queue, transitions
from pipeline.errors import PipelineNotRetryable, PipelineNotRunning
from pipeline.invariant import find_drift
from pipeline.models import EmailOutbox, PipelineRun, RunKind, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import finish_stages


def jobs_by_status() -> list[tuple[str, str, dict]]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT task_name, status, args FROM procrastinate_jobs ORDER BY id")
        return [(name, status, json.loads(args)) for name, status, args in cursor.fetchall()]


def live_stage_jobs() -> list[tuple[str, int]]:
    return [
        (name, args["run_id"])
        for name, status, args in jobs_by_status()
        if status in ("todo", "doing") and name in queue.STAGE_BY_TASK_NAME
    ]


def run_through(run, stages=STAGE_ORDER) -> None:
    """Hand ``stages`` off in-process and mark their jobs done, as a worker would."""
    finish_stages(run, stages)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'todo'"
            " AND task_name = ANY(%s) AND (args ->> 'run_id')::bigint = %s",
            [[task(s) for s in stages], run.pk],
        )


def task(stage: str) -> str:
    return queue.STAGE_JOBS[stage].task_name


@pytest.fixture
def onboarded(team, repositories):
    """A team whose onboarding completed on two selected repositories."""
    run = transitions.start_pipeline(team, [repositories[0].pk, repositories[1].pk])
    run_through(run)
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.COMPLETE
    return team


@pytest.mark.django_db
def test_a_nightly_run_syncs_the_selected_repositories_and_sends_no_email(onboarded, repositories):
    run = transitions.start_run(onboarded, RunKind.NIGHTLY)

    onboarded.refresh_from_db()
    assert (run.kind, run.state, run.stage) == ("nightly", "running", PipelineStatus.SYNCING)
    assert run.repository_ids == [repositories[0].pk, repositories[1].pk]
    assert onboarded.pipeline_status == PipelineStatus.SYNCING
    assert live_stage_jobs() == [(task(PipelineStatus.SYNCING), run.pk)]
    assert find_drift() == []

    run_through(run)

    run.refresh_from_db()
    onboarded.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE
    assert onboarded.pipeline_status == PipelineStatus.COMPLETE
    # Only the onboarding run wrote an e-mail.
    assert list(EmailOutbox.objects.values_list("run__kind", flat=True)) == ["onboarding"]
    assert find_drift() == []


@pytest.mark.django_db
def test_a_rescore_run_starts_at_detection(onboarded):
    run = transitions.start_run(onboarded, RunKind.RESCORE)

    assert run.stage == PipelineStatus.LLM_PROCESSING
    assert live_stage_jobs() == [(task(PipelineStatus.LLM_PROCESSING), run.pk)]
    assert find_drift() == []
    run_through(run, STAGE_ORDER[1:])
    run.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE
    assert EmailOutbox.objects.count() == 1


@pytest.mark.django_db
def test_a_nightly_run_is_refused_before_onboarding_completed(team, repositories):
    with pytest.raises(PipelineNotRetryable, match="not completed onboarding"):
        transitions.start_run(team, RunKind.NIGHTLY)
    assert not PipelineRun.objects.exists()
    assert jobs_by_status() == []


@pytest.mark.django_db
def test_a_nightly_run_during_a_running_run_is_skipped_and_recorded(onboarded, repositories):
    manual = transitions.restart_pipeline(onboarded)

    skipped = transitions.start_run(onboarded, RunKind.NIGHTLY)

    assert skipped.state == PipelineRun.State.SKIPPED
    assert skipped.kind == RunKind.NIGHTLY
    assert f"onboarding run {manual.pk} was running" in skipped.error
    assert live_stage_jobs() == [(task(PipelineStatus.SYNCING), manual.pk)]
    assert find_drift() == []


@pytest.mark.django_db
def test_start_run_of_kind_onboarding_is_start_pipeline(team, repositories):
    run = transitions.start_run(team, RunKind.ONBOARDING, repository_ids=[repositories[2].pk])

    assert (run.kind, run.repository_ids) == ("onboarding", [repositories[2].pk])
    assert transitions.start_run(team, RunKind.ONBOARDING, repository_ids=[1]).pk == run.pk


@pytest.mark.django_db
def test_cancel_ends_the_queued_job_and_the_run_together(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])

    cancelled = transitions.cancel_pipeline(team, reason="customer asked")

    team.refresh_from_db()
    assert cancelled.pk == run.pk
    assert cancelled.state == PipelineRun.State.CANCELLED
    assert cancelled.error == "Cancelled by staff: customer asked"
    # Never onboarded: the user can pick repositories again.
    assert team.pipeline_status == PipelineStatus.NOT_STARTED
    assert [status for _, status, _ in jobs_by_status()] == ["cancelled"]
    assert find_drift() == []


@pytest.mark.django_db
def test_cancel_of_a_nightly_run_keeps_the_dashboard(onboarded):
    transitions.start_run(onboarded, RunKind.NIGHTLY)

    transitions.cancel_pipeline(onboarded, reason="GitHub outage")

    onboarded.refresh_from_db()
    assert onboarded.pipeline_status == PipelineStatus.COMPLETE
    assert find_drift() == []


@pytest.mark.django_db
def test_cancel_of_a_running_stage_makes_its_late_hand_off_a_no_op(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'doing' RETURNING id, attempts")
        job_id, job_attempts = cursor.fetchone()
    attempt = transitions.begin_stage(
        run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=job_attempts
    )

    transitions.cancel_pipeline(team, reason="stuck on a huge repository")

    with connection.cursor() as cursor:
        cursor.execute("SELECT status, abort_requested FROM procrastinate_jobs")
        assert cursor.fetchall() == [("doing", True)]
    attempt.refresh_from_db()
    assert attempt.outcome == StageAttempt.Outcome.CANCELLED
    # The job still shows doing, but its execution is recorded as finished: no drift.
    assert find_drift() == []
    # The worker's stage body returns later: nothing moves.
    assert transitions.complete_stage(attempt.pk, {}) is None
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.NOT_STARTED
    assert live_stage_jobs() == [(task(PipelineStatus.SYNCING), run.pk)]  # the doing one only


@pytest.mark.django_db
def test_cancel_needs_a_running_pipeline_and_a_reason(team, repositories):
    with pytest.raises(PipelineNotRunning):
        transitions.cancel_pipeline(team, reason="why not")
    transitions.start_pipeline(team, [repositories[0].pk])
    with pytest.raises(ValueError, match="reason"):
        transitions.cancel_pipeline(team, reason="  ")
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING


@pytest.mark.django_db
def test_restart_supersedes_the_running_run_and_starts_over(team, repositories):
    first = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(first, [PipelineStatus.SYNCING])

    second = transitions.restart_pipeline(team)

    first.refresh_from_db()
    team.refresh_from_db()
    assert first.state == PipelineRun.State.SUPERSEDED
    assert (second.kind, second.stage, second.repository_ids) == (
        "onboarding",
        PipelineStatus.SYNCING,
        [repositories[0].pk],
    )
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert live_stage_jobs() == [(task(PipelineStatus.SYNCING), second.pk)]
    assert find_drift() == []


@pytest.mark.django_db
def test_restart_of_a_failed_nightly_run_is_a_new_nightly_run(onboarded):
    nightly = transitions.start_run(onboarded, RunKind.NIGHTLY)
    attempt = transitions.begin_stage(nightly.pk, PipelineStatus.SYNCING, job_id=None)
    transitions.fail_stage(attempt.pk, "GitHub is down.")
    with connection.cursor() as cursor:  # the worker records the job's final failure
        cursor.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE status = 'todo'")

    again = transitions.restart_pipeline(onboarded)

    nightly.refresh_from_db()
    assert nightly.state == PipelineRun.State.SUPERSEDED
    assert (again.kind, again.state) == ("nightly", "running")
    assert find_drift() == []


@pytest.mark.django_db
def test_restart_refuses_a_team_that_never_started(team):
    with pytest.raises(PipelineNotRetryable):
        transitions.restart_pipeline(team)


@pytest.mark.django_db
def test_cancel_of_a_job_taken_but_not_yet_begun_leaves_no_drift(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    with connection.cursor() as cursor:  # a worker fetched the job; begin_stage not yet run
        cursor.execute("UPDATE procrastinate_jobs SET status = 'doing' RETURNING id")
        (job_id,) = cursor.fetchone()

    transitions.cancel_pipeline(team, reason="wrong repositories")

    assert find_drift() == []
    # When the worker gets to it, the stage does nothing.
    assert transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id) is None
