"""The hand-off's fixed cost: what a stage job spends on the database outside its body.

A transactional hand-off is one lock, one compare-and-swap, one history row, one job insert and
one NOTIFY; beginning a stage is one lock, one history row and one NOTIFY. Each is one call of a
PL/pgSQL function (migration 0008), so one round trip and one transaction of its own. These
tests count the SQL statements and the transactions one stage job issues on Django's connection
around a stage body that itself issues none, and what the job left behind (history, status,
next job, NOTIFYs on a listening connection), so a change that adds a round trip to every job
fails here, deterministically, instead of showing up later as a slower benchmark.
(procrastinate's own fetch and finish of the job run on the worker's pool and are not counted:
they are the same for the raw procrastinate baseline. Django's health check of a reused
connection, a ``SELECT 1`` that bypasses the cursor wrapper, is watched separately: a job
looks at the connection's socket instead, ``pipeline.job_connections``.)"""

from __future__ import annotations

import json
from unittest import mock

import django.db
import psycopg
import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from procrastinate.contrib.django import app
from procrastinate.job_context import JobContext
from procrastinate.jobs import Job

from pipeline import notify, queue, tasks, transitions
from pipeline.models import PipelineRun, StageAttempt
from pipeline.scope import Totals
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import test_database_url as database_url
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# A middle stage job: the begin call and the hand-off call, each its own transaction (no
# Django-managed BEGIN/COMMIT around them).
STATEMENT_BUDGET = 2


def job_context(spec: queue.JobSpec, job_id: int, **task_kwargs: int) -> JobContext:
    """What procrastinate hands a task running job ``job_id`` of ``spec`` (first attempt)."""
    job = Job(
        id=job_id,
        queue=spec.queue,
        lock=None,
        queueing_lock=None,
        task_name=spec.task_name,
        task_kwargs=task_kwargs,
        attempts=0,
    )
    return JobContext(app=app, job=job, start_timestamp=0.0, abort_reason=lambda: None)


def context_for(run: PipelineRun, job_id: int | None = None) -> JobContext:
    run.refresh_from_db()
    return job_context(queue.STAGE_JOBS[run.stage], job_id or run.current_job_id, run_id=run.pk)


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


@pytest.fixture
def status_events():
    """The pipeline_status NOTIFYs delivered to a listening connection (delivered on commit)."""
    with psycopg.connect(database_url(), autocommit=True) as listener:
        listener.execute(f"LISTEN {notify.CHANNEL}")

        def delivered() -> list[dict]:
            return [json.loads(note.payload) for note in listener.notifies(timeout=0.5)]

        yield delivered


def test_a_stage_job_spends_two_statements_each_its_own_transaction(
    quick_stages, status_events, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    status_events()  # the start's own
    for stage in STAGE_ORDER:
        jobs_before = set(job_ids())
        statements, commits = measured_stage_job(run)
        last = stage == PipelineStatus.COMPUTING_INSIGHTS

        assert len(statements) == STATEMENT_BUDGET
        assert "pipeline_begin_stage_v1" in statements[0], statements
        assert "pipeline_complete_stage_v1" in statements[-1], statements
        # No Django-managed transaction: each call commits on its own.
        assert commits == 0, stage
        events = status_events()
        assert [event["event"] for event in events] == ["stage_started", "stage_completed"]
        assert {event["run"] for event in events} == {run.pk}
        # One job deferred: the next stage's, or the last stage's e-mail job.
        [new_job] = set(job_ids()) - jobs_before
        run.refresh_from_db()
        if last:
            assert run.email.job_id == new_job
            assert run.email.status == "pending"  # recipients are chosen when it is sent
        else:
            assert run.current_job_id == new_job

    assert run.state == PipelineRun.State.COMPLETE  # the hand-offs really happened
    assert list(run.attempts.values_list("outcome", flat=True)) == [
        StageAttempt.Outcome.SUCCEEDED
    ] * len(STAGE_ORDER)


def test_a_stale_duplicate_job_costs_one_statement_and_changes_nothing(
    quick_stages, status_events, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    run.refresh_from_db()
    status_events()
    context = context_for(run, job_id=run.current_job_id + 1000)  # not the run's current job
    wrapper = connections["default"]
    with (
        mock.patch.object(wrapper, "commit", wraps=wrapper.commit) as commit,
        CaptureQueriesContext(connection) as queries,
    ):
        tasks.run_stage_job(context, PipelineStatus.SYNCING, run.pk)

    assert commit.call_count == 0
    statements = [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]
    assert len(statements) == 1, statements  # the begin call refuses: then nothing
    assert not run.attempts.exists()
    assert status_events() == []


def job_ids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM procrastinate_jobs")
        return [row[0] for row in cursor.fetchall()]


def completed_onboarding(team, repository) -> PipelineRun:
    """An onboarding run through its four stages, its e-mail queued."""
    run = transitions.start_pipeline(team, [repository.pk])
    for _ in STAGE_ORDER:
        measured_stage_job(run)
    # The totals the real metrics stage freezes on the run (the quick stages freeze none, and
    # a run without them would be counted now, in another statement).
    PipelineRun.objects.filter(pk=run.pk).update(summary={"totals": Totals(3, 2, 1).as_json()})
    run.refresh_from_db()
    return run


def measured_email_job(run: PipelineRun) -> tuple[list[str], int]:
    """Run the run's e-mail job as a worker would; (SQL statements, commits)."""
    context = job_context(queue.EMAIL_JOB, run.email.job_id, outbox_id=run.email.pk)
    wrapper = connections["default"]
    with (
        mock.patch.object(wrapper, "commit", wraps=wrapper.commit) as commit,
        CaptureQueriesContext(connection) as queries,
    ):
        tasks.send_email(context, outbox_id=run.email.pk)
    statements = [q["sql"] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]
    return statements, commit.call_count


@pytest.fixture
def kept_connection(settings):
    """Django's connection kept across jobs, as the worker keeps its job threads' ones (the
    worker command sets CONN_MAX_AGE to WORKER_CONN_MAX_AGE)."""
    before = connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
    yield connection
    connection.settings_dict["CONN_MAX_AGE"] = before
    connection.close()


def terminate_from_the_server(wrapper) -> None:
    """End ``wrapper``'s session from another connection, as a restart or an operator would,
    and wait (bounded) until the server has closed it."""
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    with psycopg.connect(database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])

        def backend_ended() -> bool:
            """the terminated backend left pg_stat_activity"""
            query = "SELECT 1 FROM pg_stat_activity WHERE pid = %s"
            return other.execute(query, [pid]).fetchone() is None

        wait_for(backend_ended, timeout=10, interval=0.05)


def test_a_kept_connection_costs_no_health_check_round_trip_before_a_job(
    quick_stages, team, repositories, kept_connection
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    measured_stage_job(run)  # the connection is now open and kept
    context = context_for(run)
    django.db.close_old_connections()  # as every job ends (Django's check is due again)
    with (
        mock.patch.object(connection, "is_usable", wraps=connection.is_usable) as select_one,
        CaptureQueriesContext(connection) as queries,
    ):
        tasks.run_stage_job(context, run.stage, run.pk)
    # Django's check would have spent a SELECT 1 before the job's first statement.
    assert select_one.call_count == 0
    assert len(queries) == STATEMENT_BUDGET
    run.refresh_from_db()
    assert run.stage == STAGE_ORDER[2]


def test_a_stage_job_on_a_connection_the_server_closed_reconnects_before_it_begins(
    quick_stages, team, repositories, kept_connection
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    measured_stage_job(run)
    context = context_for(run)
    terminate_from_the_server(connection)

    tasks.run_stage_job(context, run.stage, run.pk)

    run.refresh_from_db()
    assert run.stage == STAGE_ORDER[2]
    # No attempt failed on the dead connection: one succeeded attempt per stage so far.
    assert sorted(run.attempts.values_list("stage", "outcome")) == sorted(
        [(STAGE_ORDER[0], "succeeded"), (STAGE_ORDER[1], "succeeded")]
    )


def test_the_email_job_reads_in_one_statement_and_records_in_one_transaction(
    quick_stages, team, admin_user, repositories, kept_connection
):
    first = completed_onboarding(team, repositories[0])
    statements, commits = measured_email_job(first)
    # A connection's first e-mail prepares the read; the read locks the outbox row with its
    # team, run, admins, repositories and insights; then the outcome.
    assert len(statements) == 3, statements
    assert statements[0].startswith("PREPARE pipeline_email_read_v1")
    assert "FOR UPDATE OF o" in statements[0]
    assert statements[1].startswith("EXECUTE pipeline_email_read_v1(")
    assert statements[2].startswith("UPDATE pipeline_emailoutbox SET")
    assert commits == 1
    first.email.refresh_from_db()
    assert (first.email.status, first.email.recipients) == ("sent", [admin_user.email])

    # Every later e-mail on that connection: the read and the outcome, nothing else.
    second = completed_onboarding(team, repositories[0])
    statements, commits = measured_email_job(second)
    assert [statement.split("(")[0].split(" SET")[0] for statement in statements] == [
        "EXECUTE pipeline_email_read_v1",
        "UPDATE pipeline_emailoutbox",
    ]
    assert commits == 1
    second.email.refresh_from_db()
    assert second.email.status == "sent"


def test_an_email_job_on_a_connection_the_server_closed_prepares_its_read_again(
    quick_stages, team, admin_user, repositories, kept_connection
):
    first = completed_onboarding(team, repositories[0])
    measured_email_job(first)
    second = completed_onboarding(team, repositories[0])
    assert second.email.status == "pending"  # loaded now: the job is the next to use the connection
    # The server ends the session (a restart, an operator): its prepared statement goes too.
    terminate_from_the_server(connection)

    statements, _ = measured_email_job(second)

    assert statements[0].startswith("PREPARE pipeline_email_read_v1")
    second.email.refresh_from_db()
    assert (second.email.status, second.email.recipients) == ("sent", [admin_user.email])


def test_an_email_whose_prepared_read_went_missing_fails_once_and_sends_on_its_retry(
    quick_stages, team, admin_user, repositories, kept_connection
):
    first = completed_onboarding(team, repositories[0])
    measured_email_job(first)
    second = completed_onboarding(team, repositories[0])
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE pipeline_email_read_v1")  # as a pooler's session swap would

    with pytest.raises(django.db.DatabaseError, match="pipeline_email_read_v1"):
        measured_email_job(second)
    second.email.refresh_from_db()
    assert (second.email.status, second.email.attempts) == ("pending", 0)  # nothing recorded

    statements, _ = measured_email_job(second)  # procrastinate's retry of the job
    assert statements[0].startswith("PREPARE pipeline_email_read_v1")
    second.email.refresh_from_db()
    assert (second.email.status, second.email.recipients) == ("sent", [admin_user.email])
