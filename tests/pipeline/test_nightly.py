"""The nightly batch in-process: the shipped schedule's meaning, the bounded fan-out, skips
recorded in the run history, and nightly jobs yielding to onboarding's."""

from __future__ import annotations

import datetime
import json

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from procrastinate.contrib.django import app

from onboarding.models import Repository, Team
from pipeline import nightly, queue, transitions
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, RunKind
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import finish_stages

pytestmark = pytest.mark.django_db

UTC = datetime.UTC


def mark_jobs_done(run: PipelineRun) -> None:
    """What a worker records after the in-process hand-offs of ``run``'s stages."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'todo'"
            " AND (args ->> 'run_id')::bigint = %s",
            [run.pk],
        )


def onboarded_team(name: str) -> Team:
    team = Team.objects.create(name=name)
    repo = Repository.objects.create(team=team, github_id=hash(name) % 10**6, full_name=f"{name}/r")
    run = transitions.start_pipeline(team, [repo.pk])
    finish_stages(run)
    mark_jobs_done(run)
    return team


def finish(run: PipelineRun) -> None:
    finish_stages(run, STAGE_ORDER)
    mark_jobs_done(run)


def live_stage_jobs() -> list[tuple[int, int]]:
    """(run id, priority) of every live stage job."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT args, priority FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            " AND task_name = ANY(%s) ORDER BY id",
            [list(queue.STAGE_BY_TASK_NAME)],
        )
        return [(json.loads(args)["run_id"], priority) for args, priority in cursor.fetchall()]


def test_the_shipped_schedule_is_two_in_the_morning_utc_every_day():
    [periodic] = [
        p for p in app.periodic_registry.periodic_tasks.values() if p.task.name == nightly.TICK_TASK
    ]
    assert periodic.cron == settings.NIGHTLY_CRON == "0 2 * * *"

    def next_tick(after: datetime.datetime) -> datetime.datetime:
        stamp = periodic.croniter.get_next(ret_type=float, start_time=after.timestamp())
        return datetime.datetime.fromtimestamp(stamp, tz=UTC)

    assert next_tick(datetime.datetime(2026, 3, 4, 1, 59, 30, tzinfo=UTC)) == datetime.datetime(
        2026, 3, 4, 2, 0, tzinfo=UTC
    )
    assert next_tick(datetime.datetime(2026, 3, 4, 2, 0, 30, tzinfo=UTC)) == datetime.datetime(
        2026, 3, 5, 2, 0, tzinfo=UTC
    )


def test_the_fan_out_keeps_at_most_the_cap_in_flight_and_gets_to_every_team(settings):
    settings.NIGHTLY_MAX_IN_FLIGHT = 2
    teams = [onboarded_team(f"team{i}") for i in range(5)]
    Team.objects.create(name="never onboarded")
    batch = timezone.now()

    first = nightly.fan_out_step(batch)
    again = nightly.fan_out_step(batch)

    assert (first.started, first.remaining) == ([teams[0].pk, teams[1].pk], 3)
    assert again.started == [] and again.in_flight == 2
    assert len(live_stage_jobs()) == 2
    assert find_drift() == []

    onboarded_team("joined during the batch")  # its data is fresh: not part of this batch
    steps = [first, again]
    while not steps[-1].done:
        for run in PipelineRun.objects.filter(kind=RunKind.NIGHTLY, state="running"):
            finish(run)
        steps.append(nightly.fan_out_step(batch))
        assert len(live_stage_jobs()) <= 2
    for run in PipelineRun.objects.filter(kind=RunKind.NIGHTLY, state="running"):
        finish(run)

    nightly_runs = PipelineRun.objects.filter(kind=RunKind.NIGHTLY)
    assert sorted(nightly_runs.values_list("team_id", flat=True)) == [t.pk for t in teams]
    assert set(nightly_runs.values_list("state", flat=True)) == {"complete"}
    assert nightly.fan_out_step(batch).started == []  # a re-run of the step starts nobody again
    assert find_drift() == []


def test_a_team_running_another_run_is_skipped_and_its_history_says_so():
    busy, idle = onboarded_team("busy"), onboarded_team("idle")
    manual = transitions.restart_pipeline(busy)

    step = nightly.fan_out_step(timezone.now())

    assert (step.started, step.skipped, step.remaining) == ([idle.pk], [busy.pk], 0)
    skipped = PipelineRun.objects.get(team=busy, kind=RunKind.NIGHTLY)
    assert skipped.state == PipelineRun.State.SKIPPED
    assert skipped.error == f"Not started: onboarding run {manual.pk} was running."
    manual.refresh_from_db()
    assert manual.state == PipelineRun.State.RUNNING
    assert find_drift() == []


def test_a_team_that_cannot_start_is_recorded_and_does_not_stop_the_others():
    broken, fine = onboarded_team("broken"), onboarded_team("fine")
    Repository.objects.filter(team=broken).update(selected=False)

    step = nightly.fan_out_step(timezone.now())

    assert step.started == [fine.pk] and step.skipped == [broken.pk] and step.done
    assert (
        "no selected repositories"
        in PipelineRun.objects.get(team=broken, kind=RunKind.NIGHTLY).error
    )


def test_nightly_stage_jobs_yield_to_onboarding_jobs(repositories, team):
    settled = onboarded_team("settled")
    nightly_run = transitions.start_run(settled, RunKind.NIGHTLY)
    onboarding = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(nightly_run, [PipelineStatus.SYNCING])  # the next stage keeps the priority

    priorities = dict(live_stage_jobs())

    assert priorities[onboarding.pk] == 0
    assert priorities[nightly_run.pk] == settings.NIGHTLY_JOB_PRIORITY < 0


def test_one_fan_out_job_waits_at_a_time():
    batch = timezone.now()

    assert nightly.start_batch(int(batch.timestamp())) is not None
    assert nightly.defer_fan_out(batch) is None


@pytest.mark.django_db(transaction=True)
def test_a_nightly_run_that_ends_pulls_the_waiting_fan_out_step_forward(empty_queue_after):
    team = onboarded_team("solo")
    batch = timezone.now()
    run = transitions.start_run(team, RunKind.NIGHTLY)
    job_id = nightly.defer_fan_out(batch, delay=3600)

    finish(run)  # pipeline_completed is sent after the hand-off commits

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT scheduled_at <= now() FROM procrastinate_jobs WHERE id = %s", [job_id]
        )
        assert cursor.fetchone() == (True,)
