"""Staff re-queue jobs from the Django admin: stalled and failed ones only."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse

from pipeline import transitions
from pipeline.invariant import find_drift
from pipeline.models import EmailOutbox, PipelineRun
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:procrastinate_procrastinatejob_changelist"


@pytest.fixture
def staff_client(client):
    staff = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456!")
    client.force_login(staff)
    return client


def sql(query: str, params: list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else None


def job_state(job_id: int) -> str:
    return sql("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])[0][0]


def put_job_in_doing(heartbeat_age: str) -> int:
    """The sync job as a worker with a heartbeat of the given age would hold it."""
    [(worker_id,)] = sql(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - %s::interval)"
        " RETURNING id",
        [heartbeat_age],
    )
    [(job_id,)] = sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s RETURNING id", [worker_id]
    )
    return job_id


def requeue(staff_client, *job_ids: int, reason: str = "worker host lost"):
    return staff_client.post(
        reverse(CHANGELIST),
        {
            "action": "requeue",
            "_selected_action": [str(i) for i in job_ids],
            "confirm": "yes",
            "reason": reason,
        },
        follow=True,
    )


def test_a_stalled_stage_job_is_superseded_by_a_new_current_job(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = put_job_in_doing("10 minutes")

    response = requeue(staff_client, job_id)

    assert "stalled, re-queued" in response.content.decode()
    # The dead worker's job ends; a new job carries the stage (a late finish of the old one
    # can then change nothing; aborted, which procrastinate's retry cannot revive).
    assert job_state(job_id) == "aborted"
    run.refresh_from_db()
    assert run.current_job_id != job_id and job_state(run.current_job_id) == "todo"
    assert find_drift() == []


def test_a_job_whose_worker_is_alive_is_left_alone(staff_client, team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])
    job_id = put_job_in_doing("1 second")

    response = requeue(staff_client, job_id)

    assert "still running on a live worker" in response.content.decode()
    assert job_state(job_id) == "doing"


def test_requeueing_a_failed_stage_job_resumes_the_pipeline_at_that_stage(
    staff_client, team, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    [(job_id,)] = sql("SELECT id FROM procrastinate_jobs")
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id)
    transitions.fail_stage(attempt.pk, "GitHub had an error; try again.")
    sql("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job_id])
    assert find_drift() == []

    response = requeue(staff_client, job_id)

    assert "resumed at syncing" in response.content.decode()
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert team.pipeline_error == ""
    run.refresh_from_db()
    assert run.state == PipelineRun.State.RUNNING
    # The stage runs again in a new job with a full retry budget; the failed one stays failed.
    assert run.current_job_id != job_id
    assert job_state(run.current_job_id) == "todo"
    assert job_state(job_id) == "failed"
    assert find_drift() == []


def test_a_failed_job_of_a_pipeline_that_moved_on_is_refused(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    [(job_id,)] = sql("SELECT id FROM procrastinate_jobs")
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id)
    transitions.complete_stage(attempt.pk, {})
    sql("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [job_id])

    response = requeue(staff_client, job_id)

    assert "moved on" in response.content.decode()
    assert job_state(job_id) == "failed"
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.LLM_PROCESSING


def test_a_failed_job_whose_pipeline_still_claims_it_resumes_the_pipeline(
    staff_client, team, repositories
):
    # The job ended failed without our code recording it (say the database went away while
    # the worker recorded the failure): the team still says syncing, with no live job.
    transitions.start_pipeline(team, [repositories[0].pk])
    [(job_id,)] = sql("UPDATE procrastinate_jobs SET status = 'failed' RETURNING id")

    response = requeue(staff_client, job_id)

    assert "resumed at syncing" in response.content.decode()
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert job_state(PipelineRun.objects.get().current_job_id) == "todo"
    assert find_drift() == []


def test_a_failed_email_can_be_resent_from_the_outbox(staff_client, team, admin_user, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(run)
    outbox = EmailOutbox.objects.get(run=run)
    EmailOutbox.objects.filter(pk=outbox.pk).update(status=EmailOutbox.Status.FAILED)
    sql("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", [outbox.job_id])

    staff_client.post(
        reverse("admin:pipeline_emailoutbox_changelist"),
        {"action": "resend", "_selected_action": [str(outbox.pk)]},
        follow=True,
    )

    failed_job_id = outbox.job_id
    outbox.refresh_from_db()
    assert outbox.status == EmailOutbox.Status.PENDING
    assert outbox.job_id != failed_job_id
    assert job_state(outbox.job_id) == "todo"
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.COMPLETE


def test_the_run_page_shows_the_stage_history(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    transitions.complete_stage(attempt.pk, {"prs_synced": 42})

    page = staff_client.get(reverse("admin:pipeline_pipelinerun_change", args=[run.pk]))

    assert page.status_code == 200
    assert "prs_synced" in page.content.decode()
