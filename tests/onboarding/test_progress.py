"""The progress snapshot (onboarding/progress_snapshot.py) and the two pull endpoints built on
it: the polling fragment and the JSON status with the database's and the queue's view side by
side."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from onboarding.models import Membership, Repository, Team
from onboarding.progress_delay import DELAYED_AFTER_SECONDS
from onboarding.progress_snapshot import build_snapshot
from pipeline import progress, transitions
from pipeline.models import PipelineRun, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import finish_stages

pytestmark = pytest.mark.django_db

SYNCING = PipelineStatus.SYNCING
DETECTING = PipelineStatus.LLM_PROCESSING


def states(snapshot) -> dict[str, str]:
    return {stage.stage: stage.state for stage in snapshot.stages}


def stage(snapshot, name: str):
    return next(s for s in snapshot.stages if s.stage == name)


def sql(query: str, params: list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchone() if cursor.description else None


def add_worker(seconds_since_heartbeat: float) -> int:
    (worker_id,) = sql(
        "INSERT INTO procrastinate_workers (last_heartbeat)"
        " VALUES (now() - make_interval(secs => %s)) RETURNING id",
        [seconds_since_heartbeat],
    )
    return worker_id


def job_of(run: PipelineRun) -> int:
    (job_id,) = sql(
        "SELECT id FROM procrastinate_jobs WHERE (args->>'run_id')::bigint = %s"
        " ORDER BY id DESC LIMIT 1",
        [run.pk],
    )
    return job_id


def age(run: PipelineRun, seconds: float) -> None:
    """Move the run's start (and the team's) ``seconds`` into the past."""
    started = timezone.now() - datetime.timedelta(seconds=seconds)
    PipelineRun.objects.filter(pk=run.pk).update(started_at=started)
    Team.objects.filter(pk=run.team_id).update(pipeline_started_at=started)


@pytest.fixture
def run(team, repositories) -> PipelineRun:
    return transitions.start_pipeline(team, [r.pk for r in repositories])


# --- the snapshot -------------------------------------------------------------------------


def test_team_that_never_started_has_every_stage_waiting(team):
    snapshot = build_snapshot(team.pk)

    assert snapshot.status == PipelineStatus.NOT_STARTED
    assert snapshot.run_id is None
    assert set(states(snapshot).values()) == {"waiting"}
    assert not snapshot.delayed
    assert not snapshot.finished


def test_running_run_shows_done_running_and_waiting_stages_with_counters(run):
    finish_stages(run, [SYNCING])
    transitions.begin_stage(run.pk, DETECTING, job_id=None)
    progress.report(run, repositories_done=3, prs_synced=250, prs_analysed=40, prs_to_analyse=250)

    snapshot = build_snapshot(run.team_id)

    assert snapshot.status == DETECTING
    assert states(snapshot) == {
        SYNCING: "done",
        DETECTING: "running",
        PipelineStatus.COMPUTING_METRICS: "waiting",
        PipelineStatus.COMPUTING_INSIGHTS: "waiting",
    }
    counters = snapshot.counters
    assert (counters.repositories_done, counters.repositories_total) == (3, 3)
    assert counters.prs_synced == 250
    assert (counters.prs_analysed, counters.prs_to_analyse) == (40, 250)
    assert counters.weeks_computed is None


def test_elapsed_time_per_stage_comes_from_the_attempt_history(run):
    finish_stages(run, [SYNCING])
    transitions.begin_stage(run.pk, DETECTING, job_id=None)
    now = timezone.now()
    StageAttempt.objects.filter(run=run, stage=SYNCING).update(
        started_at=now - datetime.timedelta(seconds=200),
        finished_at=now - datetime.timedelta(seconds=110),
    )
    StageAttempt.objects.filter(run=run, stage=DETECTING).update(
        started_at=now - datetime.timedelta(seconds=20)
    )

    snapshot = build_snapshot(run.team_id)

    assert stage(snapshot, SYNCING).elapsed_seconds == pytest.approx(90.0)
    assert stage(snapshot, SYNCING).elapsed_display == "1 min 30 s"
    assert 19.5 <= stage(snapshot, DETECTING).elapsed_seconds <= 25
    assert stage(snapshot, PipelineStatus.COMPUTING_METRICS).elapsed_seconds is None


def test_stage_being_retried_counts_attempts_and_shows_why(run):
    attempt = transitions.begin_stage(run.pk, SYNCING, job_id=None)
    transitions.retry_stage_later(attempt.pk, "GitHub answered 502; trying again.")

    snapshot = build_snapshot(run.team_id)

    syncing = stage(snapshot, SYNCING)
    assert syncing.state == "running"
    assert syncing.attempts == 1
    assert syncing.note == "GitHub answered 502; trying again."


def test_failed_run_marks_the_failed_stage_and_carries_the_users_error(run):
    finish_stages(run, [SYNCING])
    attempt = transitions.begin_stage(run.pk, DETECTING, job_id=None)
    transitions.fail_stage(attempt.pk, "The LLM endpoint refused the API key.")

    snapshot = build_snapshot(run.team_id)

    assert snapshot.finished and snapshot.is_failed
    assert snapshot.error == "The LLM endpoint refused the API key."
    assert states(snapshot)[SYNCING] == "done"
    assert states(snapshot)[DETECTING] == "failed"
    assert states(snapshot)[PipelineStatus.COMPUTING_METRICS] == "waiting"


def test_complete_run_shows_stages_done_and_a_stage_that_reported_skipped(run):
    finish_stages(run, [SYNCING])
    finish_stages(run, [DETECTING], counts={"skipped": True})
    finish_stages(run, STAGE_ORDER[2:])

    snapshot = build_snapshot(run.team_id)

    assert snapshot.is_complete and snapshot.finished
    assert states(snapshot) == {
        SYNCING: "done",
        DETECTING: "skipped",
        PipelineStatus.COMPUTING_METRICS: "done",
        PipelineStatus.COMPUTING_INSIGHTS: "done",
    }


def test_run_summary_notes_reach_the_snapshot(run):
    PipelineRun.objects.filter(pk=run.pk).update(
        summary={
            "skipped_repositories": [{"id": 1, "full_name": "acme/gone", "reason": "not found"}],
            "llm": {"configured": False, "message": "No LLM is configured: signatures only."},
        }
    )

    notes = build_snapshot(run.team_id).notes

    assert notes == ["Skipped acme/gone: not found.", "No LLM is configured: signatures only."]


def test_processing_is_delayed_without_progress_and_without_a_live_worker(run):
    age(run, DELAYED_AFTER_SECONDS + 30)

    assert build_snapshot(run.team_id).delayed


def test_processing_is_not_delayed_while_a_worker_is_alive(run):
    age(run, DELAYED_AFTER_SECONDS + 30)
    add_worker(seconds_since_heartbeat=1)

    snapshot = build_snapshot(run.team_id)

    assert not snapshot.delayed
    assert snapshot.queue.worker_alive


def test_processing_is_not_delayed_right_after_progress(run):
    age(run, DELAYED_AFTER_SECONDS + 30)
    transitions.begin_stage(run.pk, SYNCING, job_id=None)  # something happened just now

    assert not build_snapshot(run.team_id).delayed


def test_queue_view_shows_the_current_stage_job_and_no_mismatch(run):
    snapshot = build_snapshot(run.team_id)

    assert snapshot.queue.job_id == job_of(run)
    assert snapshot.queue.status == "todo"
    assert snapshot.queue.task_name == "pipeline.stage.sync"
    assert snapshot.mismatch == ""


def test_a_doing_job_whose_worker_stopped_heartbeating_is_a_visible_mismatch(run):
    dead = add_worker(seconds_since_heartbeat=600)
    sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        [dead, job_of(run)],
    )
    age(run, DELAYED_AFTER_SECONDS + 30)

    snapshot = build_snapshot(run.team_id)

    assert snapshot.queue.status == "doing"
    assert snapshot.queue.worker_id == dead
    assert not snapshot.queue.worker_alive
    assert "worker" in snapshot.mismatch
    assert snapshot.delayed


def test_queue_view_of_a_failed_run_finds_its_finished_job_through_the_attempt(run):
    job_id = job_of(run)
    attempt = transitions.begin_stage(run.pk, SYNCING, job_id=job_id)
    transitions.fail_stage(attempt.pk, "GitHub connection is broken: reconnect GitHub")
    sql("UPDATE procrastinate_jobs SET status = 'failed', attempts = 4 WHERE id = %s", [job_id])

    snapshot = build_snapshot(run.team_id)

    assert (snapshot.queue.job_id, snapshot.queue.status) == (job_id, "failed")
    assert snapshot.queue.attempts == 4
    assert snapshot.mismatch == ""


def test_failed_run_whose_job_is_still_queued_is_a_visible_mismatch(run):
    attempt = transitions.begin_stage(run.pk, SYNCING, job_id=job_of(run))
    transitions.fail_stage(attempt.pk, "GitHub connection is broken: reconnect GitHub")

    snapshot = build_snapshot(run.team_id)

    assert snapshot.queue.status == "todo"
    assert snapshot.mismatch == "The pipeline has failed but its stage job is still queued."


# --- the pull endpoints -------------------------------------------------------------------


@pytest.fixture
def member_client(client, admin_user):
    client.force_login(admin_user)
    return client


def test_fragment_and_status_refuse_anonymous_requests(client, team):
    assert client.get(reverse("progress_fragment")).status_code == 403
    assert client.get(reverse("progress_status")).status_code == 403


def test_fragment_and_status_need_a_team(client):
    user = get_user_model().objects.create_user(username="loner", password="x" * 12)
    client.force_login(user)

    assert client.get(reverse("progress_fragment")).status_code == 404
    assert client.get(reverse("progress_status")).status_code == 404


def test_fragment_of_a_running_pipeline_keeps_polling(member_client, run):
    progress.report(run, prs_synced=12)

    response = member_client.get(reverse("progress_fragment"))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-status="syncing"' in html
    assert 'data-counter="prs_synced">12<' in html


def test_fragment_of_a_complete_pipeline_stops_polling_and_links_the_dashboard(member_client, run):
    finish_stages(run, STAGE_ORDER)

    response = member_client.get(reverse("progress_fragment"))

    assert response.status_code == 286
    assert f'href="{reverse("dashboard")}"' in response.content.decode()


def test_fragment_of_a_failed_pipeline_stops_polling_and_offers_a_retry(member_client, run):
    attempt = transitions.begin_stage(run.pk, SYNCING, job_id=None)
    transitions.fail_stage(attempt.pk, "GitHub connection is broken: reconnect GitHub")

    response = member_client.get(reverse("progress_fragment"))

    assert response.status_code == 286
    html = response.content.decode()
    assert "GitHub connection is broken: reconnect GitHub" in html
    assert f'action="{reverse("retry_pipeline")}"' in html
    assert 'name="csrfmiddlewaretoken"' in html


def test_status_json_puts_the_database_view_next_to_the_queue_view(member_client, run):
    progress.report(run, prs_synced=5)

    body = member_client.get(reverse("progress_status")).json()

    assert body["database"]["status"] == "syncing"
    assert body["database"]["run"] == run.pk
    assert body["database"]["progress"]["prs_synced"] == 5
    assert [s["state"] for s in body["database"]["stages"]] == [
        "running",
        "waiting",
        "waiting",
        "waiting",
    ]
    assert body["queue"]["job_id"] == job_of(run)
    assert body["queue"]["status"] == "todo"
    assert body["mismatch"] is None


def test_status_json_shows_the_mismatch_when_the_stage_job_is_missing(member_client, run):
    sql("DELETE FROM procrastinate_jobs WHERE id = %s", [job_of(run)])

    body = member_client.get(reverse("progress_status")).json()

    assert body["database"]["status"] == "syncing"
    assert body["queue"]["job_id"] is None
    assert (
        body["mismatch"] == "The team is syncing pull requests but no job is queued for that stage."
    )


def test_endpoints_show_only_the_users_own_team(client, run):
    other = Team.objects.create(name="Globex")
    Repository.objects.create(team=other, github_id=9, full_name="globex/x")
    grace = get_user_model().objects.create_user(username="grace", password="x" * 12)
    Membership.objects.create(team=other, user=grace, role=Membership.Role.ADMIN)
    client.force_login(grace)

    body = client.get(reverse("progress_status")).json()
    html = client.get(reverse("progress_fragment")).content.decode()

    assert body["team"] == other.pk
    assert body["database"]["status"] == "not_started"
    assert body["database"]["run"] is None
    assert 'data-status="not_started"' in html
    assert f'data-run="{run.pk}"' not in html


def test_stream_under_wsgi_refuses_at_once_instead_of_hanging(member_client):
    # Django's test client is a WSGI-style handler, like runserver.
    response = member_client.get(reverse("progress_stream"))

    assert response.status_code == 503
    assert "ASGI" in response.content.decode()
