"""Nothing strands a pipeline: retries and rescues are live work for the drift check, stale
duplicate jobs do nothing, a job that keeps killing its worker is given up, and a pipeline
whose job vanished outside our code fails with a message and can be resumed."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone

from pipeline import queue, rescue, transitions
from pipeline.errors import PipelineNotRetryable
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, StageAttempt
from pipeline.stages import email as email_stage
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages

pytestmark = pytest.mark.django_db


def sql(query: str, params: list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else None


def sync_job_id() -> int:
    [(job_id,)] = sql(
        "SELECT id FROM procrastinate_jobs WHERE task_name = %s",
        [queue.STAGE_JOBS[PipelineStatus.SYNCING].task_name],
    )
    return job_id


def run_by_dead_worker(job_id: int, attempts: int = 0) -> None:
    [(worker_id,)] = sql(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')"
        " RETURNING id"
    )
    sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s, attempts = %s"
        " WHERE id = %s",
        [worker_id, attempts, job_id],
    )


def test_a_retry_in_progress_is_live_work_not_drift(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = sync_job_id()
    sql("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
    first = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=0)
    transitions.retry_stage_later(first.pk, "GitHub had an error; try again.")
    # procrastinate runs the same job again: same id, attempts counter bumped.
    sql("UPDATE procrastinate_jobs SET attempts = 1 WHERE id = %s", [job_id])

    assert find_drift() == []  # picked up, second attempt not begun yet
    transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=1)
    assert find_drift() == []  # second attempt running


def test_a_stale_duplicate_job_of_the_current_stage_does_nothing(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    current = sync_job_id()

    assert transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=current + 1000) is None
    assert transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=current) is not None


def test_a_rescheduled_stage_moves_the_current_job(team, repositories):
    import datetime

    from django.utils import timezone

    run = transitions.start_pipeline(team, [repositories[0].pk])
    old_job = sync_job_id()
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=old_job)

    transitions.reschedule_stage(
        attempt.pk, timezone.now() + datetime.timedelta(minutes=5), "GitHub rate limit"
    )

    run.refresh_from_db()
    assert run.current_job_id not in (None, old_job)
    # The old job, if a rescue ran it again, would not run the stage a second time.
    assert transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=old_job) is None


def job_status(job_id: int) -> str:
    return sql("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])[0][0]


def test_a_stalled_stage_job_is_superseded_by_a_new_current_job(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = sync_job_id()
    transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=0)
    run_by_dead_worker(job_id)

    outcome = rescue.rescue_stalled_jobs()

    assert outcome == {"rescued": [job_id], "repaired": [], "failed_runs": []}
    run.refresh_from_db()
    assert job_status(job_id) == "aborted"
    assert run.current_job_id != job_id and job_status(run.current_job_id) == "todo"
    [lost] = StageAttempt.objects.filter(run=run)
    assert lost.outcome == StageAttempt.Outcome.FAILED
    assert lost.error == transitions.WORKER_LOST_MESSAGE
    assert find_drift() == []
    # The superseded execution, were its worker only hung, can no longer begin or hand off.
    assert transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id) is None
    assert transitions.complete_stage(lost.pk, {}) is None


def test_a_late_finish_of_a_superseded_execution_changes_nothing(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    old_job = sync_job_id()
    stale = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=old_job)
    run_by_dead_worker(old_job)
    rescue.rescue_stalled_jobs()
    run.refresh_from_db()
    current = transitions.begin_stage(
        run.pk, PipelineStatus.SYNCING, job_id=run.current_job_id, job_attempts=0
    )

    # The old execution's hand-off, failure or retry: all no-ops.
    assert transitions.complete_stage(stale.pk, {}) is None
    assert transitions.fail_stage(stale.pk, "late") is False
    transitions.retry_stage_later(stale.pk, "late")
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert transitions.complete_stage(current.pk, {}) == PipelineStatus.LLM_PROCESSING


def test_a_job_that_keeps_killing_its_worker_is_given_up_and_the_pipeline_fails(
    team, repositories, settings
):
    settings.PIPELINE_STAGE_MAX_RETRIES = 3
    run = transitions.start_pipeline(team, [repositories[0].pk])
    for _ in range(4):  # three lost attempts before, the fourth running now
        job_id = PipelineRun.objects.get(pk=run.pk).current_job_id
        transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=0)
        run_by_dead_worker(job_id)
        outcome = rescue.rescue_stalled_jobs()

    assert outcome == {"rescued": [job_id], "repaired": [], "failed_runs": []}
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.FAILED
    assert "stopped unexpectedly while syncing pull requests" in team.pipeline_error
    assert [a.error for a in StageAttempt.objects.filter(run=run)] == [
        transitions.WORKER_LOST_MESSAGE
    ] * 4
    assert find_drift() == []

    # The user's Retry resumes it.
    transitions.retry_pipeline(team)
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert find_drift() == []


def test_an_execution_that_ended_as_retrying_while_its_job_stayed_doing_is_superseded(
    team, repositories
):
    """The stuck "retrying" case: the stage failed during a database outage, we recorded the
    retry, procrastinate's own retry write was lost, and the worker lived on."""
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = sync_job_id()
    sql("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=0)
    transitions.retry_stage_later(attempt.pk, "GitHub had an error; try again.")
    assert rescue.repair_ended_executions() == []  # within the normal commit-to-record gap
    StageAttempt.objects.filter(pk=attempt.pk).update(
        finished_at=timezone.now() - datetime.timedelta(minutes=1)
    )

    assert rescue.repair_ended_executions() == [job_id]

    run.refresh_from_db()
    assert job_status(job_id) == "aborted"
    assert job_status(run.current_job_id) == "todo"
    assert find_drift() == []


def test_a_pipeline_whose_job_was_cancelled_behind_its_back_fails_and_can_resume(
    team, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    sql("UPDATE procrastinate_jobs SET status = 'cancelled'")
    assert find_drift() != []

    assert rescue.fail_stranded_runs() == [run.pk]

    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.FAILED
    assert PipelineRun.objects.get().state == PipelineRun.State.FAILED
    assert find_drift() == []
    transitions.retry_pipeline(team)
    assert find_drift() == []


def test_the_stranded_check_leaves_healthy_pipelines_alone(team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])

    assert rescue.fail_stranded_runs() == []
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING


def test_resuming_with_a_job_that_is_not_the_runs_failed_job_is_refused(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = sync_job_id()
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id)
    transitions.fail_stage(attempt.pk, "GitHub had an error; try again.")
    # The job has not been recorded as failed (still doing): not resumable by id.

    with pytest.raises(PipelineNotRetryable):
        transitions.retry_pipeline(team, failed_job_id=job_id)
    with pytest.raises(PipelineNotRetryable):
        transitions.retry_pipeline(team, failed_job_id=job_id + 1000)

    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.FAILED


def test_the_completion_email_goes_to_admins_added_after_the_run(team, repositories, mailoutbox):
    from django.contrib.auth import get_user_model

    from onboarding.models import Membership

    run = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(run)
    outbox = run.email
    assert outbox.recipients == []

    with pytest.raises(email_stage.EmailNotSent):
        email_stage.send_outbox(outbox.pk, final_attempt=True)
    outbox.refresh_from_db()
    assert outbox.error == "The team has no admin with an e-mail address."

    admin = get_user_model().objects.create_user("grace", "grace@example.com", "pw-12345678")
    Membership.objects.create(team=team, user=admin, role=Membership.Role.ADMIN)
    email_stage.send_outbox(outbox.pk, final_attempt=True)

    assert [m.to for m in mailoutbox] == [["grace@example.com"]]


def test_the_moment_between_recording_a_retry_and_procrastinate_requeueing_is_not_drift(
    team, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = sync_job_id()
    sql("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=0)

    transitions.retry_stage_later(attempt.pk, "GitHub had an error; try again.")

    # The job is still "doing" until procrastinate moves it back to todo: it is the live job.
    assert find_drift() == []


def test_a_stale_duplicate_waiting_in_the_queue_is_not_drift(team, repositories):
    import datetime

    from django.utils import timezone

    run = transitions.start_pipeline(team, [repositories[0].pk])
    old_job = sync_job_id()
    sql("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [old_job])
    attempt = transitions.begin_stage(
        run.pk, PipelineStatus.SYNCING, job_id=old_job, job_attempts=0
    )
    transitions.reschedule_stage(
        attempt.pk, timezone.now() + datetime.timedelta(minutes=5), "GitHub rate limit"
    )
    # The worker died before recording the old job's end, and a rescue put it back in the queue.
    sql("UPDATE procrastinate_jobs SET status = 'todo', attempts = 1 WHERE id = %s", [old_job])

    assert find_drift() == []
    assert transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=old_job) is None
