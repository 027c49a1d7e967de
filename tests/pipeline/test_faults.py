"""Fault tests: real ``manage.py worker`` processes on real PostgreSQL with the shipped worker,
liveness and rescue settings (nothing overridden but the stage bodies). A killed worker's stage
is superseded by another worker; a stopping worker hands its stage back; a live worker is never
rescued, whether its connections are terminated or it is busy with CPU-bound work."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from pipeline import execution, transitions
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import wait_for
from tests.pipeline.test_worker import overrides, team_status

pytestmark = pytest.mark.django_db(transaction=True)


def held_liveness_locks() -> int:
    """Workers holding their liveness lock (the worker is registered and its loop runs)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE %s",
            ["tformance-worker-liveness:%"],
        )
        return cursor.fetchone()[0]


def job_status(job_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", [job_id])
        return cursor.fetchone()[0]


def attempts_of(run: PipelineRun, stage: str) -> list[StageAttempt]:
    return list(run.attempts.filter(stage=stage).order_by("attempt"))


def completions(run: PipelineRun, stage: str) -> int:
    run.refresh_from_db()
    return int((run.summary or {}).get(f"completions_{stage}", 0))


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_a_worker_killed_mid_stage_is_reported_then_superseded_by_another_worker(
    start_worker, team, admin_user, repositories, stage, capsys
):
    env = {"PIPELINE_STAGE_OVERRIDES": overrides(**{stage: "slow_first_attempt"})}
    doomed = start_worker(env)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: run.attempts.filter(stage=stage).exists(), timeout=60)
    doomed.kill()
    [lost] = attempts_of(run, stage)

    # No worker is left to rescue it: the operator's check says so instead of "no drift" (as
    # soon as PostgreSQL has ended the dead process's backend, which releases its lock: a few
    # milliseconds after the kill, so the check is retried for a bounded time, not once).
    reports = []

    def check_reports_it() -> bool:
        call_command("pipeline", "check")
        reports.append(capsys.readouterr().out)
        return f"AWAITING RESCUE job={lost.job_id} run={run.pk} stage={stage}" in reports[-1]

    wait_for(check_reports_it, timeout=10)
    assert "liveness lock" in reports[-1] and "no drift" in reports[-1]

    survivor = start_worker(env)
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE, timeout=60)

    lost, rescued = attempts_of(run, stage)
    assert lost.outcome == StageAttempt.Outcome.FAILED
    assert lost.error == transitions.WORKER_LOST_MESSAGE
    assert rescued.outcome == StageAttempt.Outcome.SUCCEEDED
    # Superseded, not re-queued: a new job carried the stage, the dead one ended as aborted.
    assert rescued.job_id != lost.job_id
    assert job_status(lost.job_id) == "aborted"
    # Found by the lock, not by the 30 s heartbeat fallback.
    assert f"rescued job {lost.job_id}" in survivor.log()
    assert "liveness lock lost" in survivor.log()
    for other in STAGE_ORDER:
        if other != stage:
            assert [a.outcome for a in attempts_of(run, other)] == ["succeeded"]
    wait_for(lambda: not find_drift())


def test_sigterm_mid_sync_hands_the_stage_to_a_second_worker_which_completes_it(
    start_worker, team, admin_user, repositories
):
    env = {
        "PIPELINE_STAGE_OVERRIDES": overrides(syncing="paged"),
        "FAULT_PAGES": "40",
        "FAULT_PAGE_SECONDS": "0.25",
    }
    first = start_worker(env)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: PipelineRun.objects.get(pk=run.pk).progress.get("pages_done", 0) >= 3)
    second = start_worker(env)
    wait_for(lambda: held_liveness_locks() == 2)

    first.terminate()
    # It handed back at its next page and exited cleanly (not the hard exit after the timeout).
    assert first.process.wait(timeout=30) == 0
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE, timeout=60)

    handed_back, finished = attempts_of(run, PipelineStatus.SYNCING)
    assert handed_back.outcome == StageAttempt.Outcome.RESCHEDULED
    assert handed_back.error == execution.HAND_BACK_REASON
    assert finished.outcome == StageAttempt.Outcome.SUCCEEDED
    assert finished.job_id != handed_back.job_id
    # The sync body ran to its end exactly once, and nothing failed.
    assert completions(run, PipelineStatus.SYNCING) == 1
    assert not run.attempts.filter(outcome=StageAttempt.Outcome.FAILED).exists()
    assert "rescued job" not in second.log()
    wait_for(lambda: not find_drift())


def test_terminating_every_worker_connection_is_survived_without_a_rescue(
    start_worker, team, admin_user, repositories
):
    env = {
        "PIPELINE_STAGE_OVERRIDES": overrides(syncing="paged"),
        "FAULT_PAGES": "24",
        "FAULT_PAGE_SECONDS": "0.25",
    }
    workers = [start_worker(env), start_worker(env)]
    wait_for(lambda: held_liveness_locks() == 2)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: PipelineRun.objects.get(pk=run.pk).progress.get("pages_done", 0) >= 3)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
        assert cursor.fetchone()[0] >= 4  # per worker: liveness, listener, pool, job threads

    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE, timeout=90)
    assert all(w.process.poll() is None for w in workers)  # both still running
    wait_for(lambda: held_liveness_locks() == 2)
    assert not run.attempts.filter(error=transitions.WORKER_LOST_MESSAGE).exists()
    assert not any("rescued job" in w.log() for w in workers)
    assert completions(run, PipelineStatus.SYNCING) == 1
    wait_for(lambda: not find_drift())


def test_a_worker_busy_with_a_cpu_bound_stage_is_never_rescued(
    start_worker, team, admin_user, repositories
):
    env = {
        "PIPELINE_STAGE_OVERRIDES": overrides(computing_metrics="cpu_heavy"),
        "FAULT_CPU_SECONDS": "8",
    }
    workers = [start_worker(env), start_worker(env)]
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    wait_for(lambda: team_status(team) == PipelineStatus.COMPLETE, timeout=90)

    [metrics] = attempts_of(run, PipelineStatus.COMPUTING_METRICS)
    assert metrics.outcome == StageAttempt.Outcome.SUCCEEDED
    assert completions(run, PipelineStatus.COMPUTING_METRICS) == 1
    assert not any("rescued job" in w.log() for w in workers)
    wait_for(lambda: not find_drift())
