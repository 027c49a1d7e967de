"""The engine with real worker processes on real Postgres: hand-offs, rollbacks, crashes,
rescue, retries and the invariant check after each."""

from __future__ import annotations

import time

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from pipeline import queue, transitions
from pipeline.invariant import find_drift
from pipeline.models import EmailOutbox, PipelineRun, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

FAULTS = "tests.pipeline.fault_stages"


def overrides(**by_stage: str) -> str:
    """PIPELINE_STAGE_OVERRIDES with every stage quick unless named."""
    chosen = {stage: f"{FAULTS}.quick" for stage in STAGE_ORDER}
    for stage, name in by_stage.items():
        chosen[stage] = f"{FAULTS}.{name}"
    return ",".join(f"{stage}={path}" for stage, path in chosen.items())


def team_status(team) -> str:
    team.refresh_from_db()
    return team.pipeline_status


def jobs_of(task_name: str) -> list[tuple[int, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, status FROM procrastinate_jobs WHERE task_name = %s ORDER BY id",
            [task_name],
        )
        return cursor.fetchall()


def test_full_chain_completes_and_sends_the_email_once(
    start_worker, team, admin_user, repositories
):
    start_worker({"PIPELINE_STAGE_OVERRIDES": overrides()})
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)
    outbox = wait_for(
        lambda: EmailOutbox.objects.filter(run=run, status=EmailOutbox.Status.SENT).first()
    )

    assert outbox.recipients == ["ada@example.com"]
    attempts = list(run.attempts.order_by("started_at"))
    assert [a.stage for a in attempts] == list(STAGE_ORDER)
    assert all(a.outcome == StageAttempt.Outcome.SUCCEEDED for a in attempts)
    assert all(a.job_id and a.duration_ms is not None for a in attempts)
    run.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE
    wait_for(lambda: not find_drift())


def test_rolled_back_hand_off_leaves_no_next_job_and_the_status_where_it_was(
    start_worker, team, repositories
):
    # A fault inside the hand-off transaction, after the next job has been deferred: the team
    # row refuses to move to computing_insights.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION refuse_insights() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'injected fault'; END $$;
            CREATE TRIGGER refuse_insights BEFORE UPDATE ON onboarding_team FOR EACH ROW
            WHEN (NEW.pipeline_status = 'computing_insights') EXECUTE FUNCTION refuse_insights();
            """
        )
    try:
        worker = start_worker(
            {"PIPELINE_STAGE_OVERRIDES": overrides(), "PIPELINE_STAGE_MAX_RETRIES": "0"}
        )
        run = transitions.start_pipeline(team, [r.pk for r in repositories])
        wait_for(lambda: team_status(team) == PipelineStatus.FAILED)

        # The insights job was deferred inside the rolled-back transaction: it never existed.
        assert jobs_of(queue.STAGE_JOBS[PipelineStatus.COMPUTING_INSIGHTS].task_name) == []
        run.refresh_from_db()
        assert run.stage == PipelineStatus.COMPUTING_METRICS  # the hand-off never happened
        metrics = run.attempts.get(stage=PipelineStatus.COMPUTING_METRICS)
        assert metrics.outcome == StageAttempt.Outcome.FAILED
        assert "secret" not in team.pipeline_error and "Traceback" not in team.pipeline_error
        wait_for(lambda: not find_drift())
        worker.stop()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER refuse_insights ON onboarding_team")
            cursor.execute("DROP FUNCTION refuse_insights()")

    # With the fault gone, a retry resumes from the failed stage and completes.
    start_worker({"PIPELINE_STAGE_OVERRIDES": overrides()})
    transitions.retry_pipeline(team)
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)
    assert len(jobs_of(queue.STAGE_JOBS[PipelineStatus.COMPUTING_INSIGHTS].task_name)) == 1
    assert run.attempts.filter(stage=PipelineStatus.SYNCING).count() == 1
    wait_for(lambda: not find_drift())


def test_a_stage_job_run_again_after_its_run_moved_on_does_nothing(
    start_worker, team, repositories
):
    start_worker({"PIPELINE_STAGE_OVERRIDES": overrides()})
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)
    attempts_before = run.attempts.count()

    # What procrastinate does when a worker crashed after our commit but before recording the
    # job's end: the same stage job runs a second time.
    with transaction.atomic():
        job_id = queue.defer_stage(PipelineStatus.SYNCING, run_id=run.pk)
    wait_for(
        lambda: (
            dict(jobs_of(queue.STAGE_JOBS[PipelineStatus.SYNCING].task_name)).get(job_id)
            == "succeeded"
        )
    )

    assert run.attempts.count() == attempts_before
    assert team_status(team) == PipelineStatus.COMPLETE
    assert not find_drift()


def test_a_transient_error_is_retried_and_recorded(start_worker, team, repositories):
    start_worker({"PIPELINE_STAGE_OVERRIDES": overrides(computing_metrics="flaky")})
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)

    outcomes = list(
        run.attempts.filter(stage=PipelineStatus.COMPUTING_METRICS)
        .order_by("attempt")
        .values_list("outcome", flat=True)
    )
    assert outcomes == [StageAttempt.Outcome.RETRYING, StageAttempt.Outcome.SUCCEEDED]
    assert not find_drift()


def test_a_permanent_error_fails_at_once_and_retry_resumes_from_that_stage(
    start_worker, team, repositories
):
    worker = start_worker({"PIPELINE_STAGE_OVERRIDES": overrides(llm_processing="revoked_token")})
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.FAILED)

    assert team.pipeline_error == "GitHub connection is broken: reconnect GitHub."
    # No retry storm: one attempt, failed.
    assert list(
        run.attempts.filter(stage=PipelineStatus.LLM_PROCESSING).values_list("outcome", flat=True)
    ) == [StageAttempt.Outcome.FAILED]
    wait_for(lambda: not find_drift())
    worker.stop()
    # An expected failure: one WARNING line with the run id, no traceback.
    log = worker.log()
    assert (
        f"WARNING pipeline.tasks stage llm_processing of run {run.pk} failed:"
        " GitHub connection is broken" in log
    )
    # Count the stage's own lines: the hourly retention job may also log under pipeline.tasks
    # when the worker starts within ten minutes of its cron time (procrastinate defers a
    # periodic run it missed by up to periodic_max_delay), which made this depend on the clock.
    assert len([line for line in log.splitlines() if f"run {run.pk}" in line]) == 1
    assert not [line for line in log.splitlines() if " ERROR " in line]
    assert "Traceback" not in log

    start_worker({"PIPELINE_STAGE_OVERRIDES": overrides()})
    transitions.retry_pipeline(team)
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)
    assert run.attempts.filter(stage=PipelineStatus.SYNCING).count() == 1
    assert team.pipeline_error == ""
    wait_for(lambda: not find_drift())


def test_an_unexpected_error_shows_a_generic_message_without_internals(
    start_worker, team, repositories
):
    start_worker(
        {
            "PIPELINE_STAGE_OVERRIDES": overrides(computing_insights="crash"),
            "PIPELINE_STAGE_MAX_RETRIES": "1",
        }
    )
    transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.FAILED)

    assert "computing insights" in team.pipeline_error
    assert "hunter2" not in team.pipeline_error
    assert "RuntimeError" not in team.pipeline_error


def test_a_failing_email_provider_leaves_the_pipeline_complete_with_the_error_recorded(
    start_worker, team, admin_user, repositories
):
    start_worker(
        {
            "PIPELINE_STAGE_OVERRIDES": overrides(),
            "TEST_EMAIL_BACKEND": "tests.pipeline.failing_email.EmailBackend",
            "PIPELINE_STAGE_MAX_RETRIES": "1",
        }
    )
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    outbox = wait_for(
        lambda: EmailOutbox.objects.filter(run=run, status=EmailOutbox.Status.FAILED).first()
    )

    assert outbox.attempts == 2
    assert "550 provider rejected" in outbox.error
    assert team_status(team) == PipelineStatus.COMPLETE
    assert not find_drift()


def test_pipeline_check_reports_zero_drift_then_detects_injected_drift(
    start_worker, team, repositories, capsys
):
    start_worker({"PIPELINE_STAGE_OVERRIDES": overrides()})
    transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)
    call_command("pipeline", "check")
    assert "no drift" in capsys.readouterr().out

    # Drift: a live stage job for a team whose pipeline is complete.
    run = PipelineRun.objects.get(team=team)
    with transaction.atomic():
        stray = queue.defer_stage(
            PipelineStatus.COMPUTING_METRICS, run_id=run.pk, schedule_at=_far_future()
        )
    with pytest.raises(CommandError) as error:
        call_command("pipeline", "check")
    assert error.value.returncode == 1
    out = capsys.readouterr().out
    assert f"team={team.pk}" in out and str(stray) in out


def _far_future():
    import datetime

    from django.utils import timezone

    return timezone.now() + datetime.timedelta(days=1)


def periodic_defers() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM procrastinate_periodic_defers")
        return cursor.fetchone()[0]


def test_a_no_periodic_worker_defers_no_tick_while_a_default_worker_does(
    start_worker, team, repositories
):
    every_second = {"PIPELINE_STAGE_OVERRIDES": overrides(), "DETECT_RESCORE_CRON": "* * * * * *"}
    quiet = start_worker(every_second)  # the tests' default: --no-periodic
    transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE)
    wait_for(lambda: not find_drift())
    # The worker was up and working over at least three ticks of the every-second schedule.
    started = time.time()
    wait_for(lambda: time.time() > started + 3, interval=0.5)
    assert quiet.process.poll() is None
    assert periodic_defers() == 0

    start_worker(every_second, periodic=True)
    wait_for(lambda: periodic_defers() > 0)
