"""The progress page's "Processing is delayed" notice tells the truth: no worker at all; a worker
alive while this stage's execution stalled (with when the rescuer is expected to hand it over);
or a wait for GitHub's rate-limit reset. And no notice when a live worker simply has the job."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.db import connection
from django.template.loader import render_to_string
from django.utils import timezone

from onboarding.models import Team
from onboarding.progress_delay import DELAYED_AFTER_SECONDS, DelayReason
from onboarding.progress_snapshot import build_snapshot
from pipeline import transitions
from pipeline.models import PipelineRun
from pipeline.status import PipelineStatus

pytestmark = pytest.mark.django_db

SYNCING = PipelineStatus.SYNCING


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


def age(run: PipelineRun, seconds: float) -> None:
    started = timezone.now() - datetime.timedelta(seconds=seconds)
    PipelineRun.objects.filter(pk=run.pk).update(started_at=started)
    Team.objects.filter(pk=run.team_id).update(pipeline_started_at=started)


def take_job(run: PipelineRun, worker_id: int) -> None:
    run.refresh_from_db()
    sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        [worker_id, run.current_job_id],
    )
    transitions.begin_stage(run.pk, SYNCING, job_id=run.current_job_id)


def page(run: PipelineRun) -> str:
    return render_to_string("onboarding/_progress.html", {"p": build_snapshot(run.team_id)})


def next_rescue(after: datetime.datetime) -> datetime.datetime:
    """The latest moment the shipped rescuer runs after ``after``: one period of the rescue
    loop every worker runs."""
    return after + datetime.timedelta(seconds=settings.PIPELINE_RESCUE_INTERVAL_SECONDS)


@pytest.fixture
def run(team, repositories) -> PipelineRun:
    return transitions.start_pipeline(team, [r.pk for r in repositories])


def test_with_no_worker_at_all_the_notice_says_no_worker_is_running(run):
    age(run, DELAYED_AFTER_SECONDS + 30)

    snapshot = build_snapshot(run.team_id)

    assert snapshot.delay.reason == DelayReason.NO_WORKER
    assert "no worker is running" in page(run)


def test_a_stalled_stage_while_another_worker_lives_says_stalled_with_the_rescue_time(run):
    take_job(run, add_worker(seconds_since_heartbeat=600))
    add_worker(seconds_since_heartbeat=1)  # the replacement, alive
    age(run, DELAYED_AFTER_SECONDS + 30)

    before = timezone.now()
    snapshot = build_snapshot(run.team_id)

    assert snapshot.delay.reason == DelayReason.STALLED
    next_pass = before + datetime.timedelta(seconds=settings.PIPELINE_RESCUE_INTERVAL_SECONDS)
    assert before <= snapshot.delay.until <= next_pass + datetime.timedelta(seconds=1)
    html = page(run)
    assert "no worker is running" not in html
    assert "the worker running this stage stopped" in html
    assert f"{snapshot.delay.until.astimezone(datetime.UTC):%H:%M}" in html


def test_a_stalled_stage_with_no_live_worker_at_all_says_no_worker(run):
    take_job(run, add_worker(seconds_since_heartbeat=600))
    age(run, DELAYED_AFTER_SECONDS + 30)

    assert build_snapshot(run.team_id).delay.reason == DelayReason.NO_WORKER


def test_a_stage_run_by_a_live_worker_shows_no_notice_however_long_it_takes(run):
    take_job(run, add_worker(seconds_since_heartbeat=1))
    age(run, 3600)

    assert build_snapshot(run.team_id).delay is None
    assert "Processing is delayed" not in page(run)


def test_a_rate_limit_wait_says_when_it_continues_even_without_a_worker(run):
    take_job(run, add_worker(seconds_since_heartbeat=1))
    attempt = run.attempts.get(stage=SYNCING)
    at = timezone.now() + datetime.timedelta(minutes=40)
    transitions.reschedule_stage(attempt.pk, at, "GitHub rate limit reached")
    sql("DELETE FROM procrastinate_workers")
    age(run, DELAYED_AFTER_SECONDS + 30)

    snapshot = build_snapshot(run.team_id)

    assert snapshot.delay.reason == DelayReason.RATE_LIMIT
    assert snapshot.delay.until == at
    assert f"{at.astimezone(datetime.UTC):%H:%M} UTC" in page(run)
    assert "rate limit to reset" in page(run)
