"""Starting, retrying and checking pipelines in-process (no worker): what gets queued, what is
refused, what the drift check sees, and when hooks fire."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from onboarding.models import Repository, Team
from pipeline import queue, signals, transitions
from pipeline.errors import InvalidSelection, PipelineNotRetryable
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, StageAttempt
from pipeline.status import PipelineStatus


def live_jobs() -> list[tuple[str, dict]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT task_name, args FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            " ORDER BY id"
        )
        # Django's connection reads jsonb as text.
        return [(name, json.loads(args)) for name, args in cursor.fetchall()]


@pytest.mark.django_db
def test_start_queues_the_sync_job_and_marks_the_selection(team, repositories):
    chosen = repositories[:2]

    run = transitions.start_pipeline(team, [str(r.pk) for r in chosen])

    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert team.pipeline_started_at is not None
    assert run.repository_ids == sorted(r.pk for r in chosen)
    assert live_jobs() == [(queue.STAGE_JOBS[PipelineStatus.SYNCING].task_name, {"run_id": run.pk})]
    assert set(Repository.objects.filter(selected=True)) == set(chosen)
    assert find_drift() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make_ids, message",
    [
        (lambda own, other: [], "Select at least one repository"),
        (lambda own, other: ["abc"], "is not a repository id"),
        (lambda own, other: [own.pk, other.pk], "not available to your team"),
        (lambda own, other: [own.pk, 987654321], "not available to your team"),
    ],
    ids=["empty", "not-a-number", "another-teams-repository", "unknown-id"],
)
def test_invalid_selections_are_refused_and_nothing_is_queued(
    team, repositories, make_ids, message
):
    other_team = Team.objects.create(name="Globex")
    other_repo = Repository.objects.create(team=other_team, github_id=1, full_name="globex/x")

    with pytest.raises(InvalidSelection, match=message):
        transitions.start_pipeline(team, make_ids(repositories[0], other_repo))

    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.NOT_STARTED
    assert live_jobs() == []
    assert not PipelineRun.objects.exists()


@pytest.mark.django_db
def test_a_second_start_while_running_returns_the_running_run(team, repositories):
    first = transitions.start_pipeline(team, [repositories[0].pk])
    second = transitions.start_pipeline(team, [repositories[1].pk])

    assert second.pk == first.pk
    assert len(live_jobs()) == 1


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_starts_give_exactly_one_run_and_one_job(team, repositories):
    ids = [r.pk for r in repositories]
    barrier = threading.Barrier(50)
    run_ids: list[int] = []
    errors: list[BaseException] = []

    def click() -> None:
        try:
            barrier.wait()
            run_ids.append(transitions.start_pipeline(team, ids).pk)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=click) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(set(run_ids)) == 1 and len(run_ids) == 50
    assert PipelineRun.objects.count() == 1
    assert len(live_jobs()) == 1
    assert find_drift() == []


@pytest.mark.django_db
def test_the_database_refuses_a_second_running_run_even_without_the_python_check(team):
    PipelineRun.objects.create(team=team, stage=PipelineStatus.SYNCING, started_at=timezone.now())

    with pytest.raises(IntegrityError), transaction.atomic():
        PipelineRun.objects.create(
            team=team, stage=PipelineStatus.SYNCING, started_at=timezone.now()
        )


@pytest.mark.django_db
def test_drift_is_reported_when_the_current_stage_has_no_job(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM procrastinate_jobs")

    drift = find_drift()

    assert [(d.team_id, d.run_id) for d in drift] == [(team.pk, run.pk)]
    assert "0 live jobs for the current stage" in drift[0].problem


@pytest.mark.django_db
def test_drift_is_reported_for_a_job_of_another_stage(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    queue.defer_stage(PipelineStatus.COMPUTING_METRICS, run_id=run.pk)

    drift = find_drift()

    assert len(drift) == 1
    assert "not current" in drift[0].problem


@pytest.mark.django_db
def test_drift_is_reported_when_a_status_claims_a_stage_with_no_running_run(team):
    # Written behind transitions' back, as a buggy migration or a manual UPDATE would.
    Team.objects.filter(pk=team.pk).update(pipeline_status=PipelineStatus.COMPUTING_METRICS)

    drift = find_drift()

    assert len(drift) == 1
    assert "0 running runs" in drift[0].problem


@pytest.mark.django_db
def test_a_finished_attempt_whose_job_still_shows_doing_is_the_tolerated_transient(
    team, repositories
):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM procrastinate_jobs")
        (job_id,) = cursor.fetchone()
        cursor.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=job_id, job_attempts=0)
    transitions.complete_stage(attempt.pk, {"prs_synced": 3})

    # The sync job is still "doing" (procrastinate has not recorded its end yet) and the detect
    # job is queued: allowed, because the sync attempt is already recorded as finished.
    assert find_drift() == []

    StageAttempt.objects.filter(pk=attempt.pk).update(finished_at=None)
    assert find_drift() != []


@pytest.mark.django_db
def test_begin_stage_is_a_no_op_when_the_run_is_in_another_stage(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])

    assert transitions.begin_stage(run.pk, PipelineStatus.COMPUTING_METRICS, job_id=None) is None
    assert not StageAttempt.objects.exists()


@pytest.mark.django_db
def test_complete_stage_twice_hands_off_once(team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)

    assert transitions.complete_stage(attempt.pk, {}) == PipelineStatus.LLM_PROCESSING
    assert transitions.complete_stage(attempt.pk, {}) is None

    detect_task = queue.STAGE_JOBS[PipelineStatus.LLM_PROCESSING].task_name
    assert [name for name, _ in live_jobs()].count(detect_task) == 1


@pytest.mark.django_db
def test_retry_refuses_a_pipeline_that_has_not_failed(team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])

    with pytest.raises(PipelineNotRetryable):
        transitions.retry_pipeline(team)


@pytest.mark.django_db(transaction=True)
def test_hooks_fire_after_commit_and_never_for_a_rolled_back_hand_off(team, repositories):
    received: list[str] = []

    def on_sync(sender, **kwargs):
        received.append(f"sync {kwargs['prs_synced']}")

    def on_failed(sender, **kwargs):
        received.append(f"failed {kwargs['stage']}")

    signals.onboarding_sync_completed.connect(on_sync)
    signals.pipeline_failed.connect(on_failed)
    try:
        run = transitions.start_pipeline(team, [repositories[0].pk])
        attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)

        with pytest.raises(RuntimeError), transaction.atomic():
            transitions.complete_stage(attempt.pk, {"prs_synced": 5})
            assert received == []  # not before the outer transaction commits
            raise RuntimeError("roll back the hand-off")
        assert received == []
        team.refresh_from_db()
        assert team.pipeline_status == PipelineStatus.SYNCING

        transitions.complete_stage(attempt.pk, {"prs_synced": 5})
        assert received == ["sync 5"]

        attempt = transitions.begin_stage(run.pk, PipelineStatus.LLM_PROCESSING, job_id=None)
        transitions.fail_stage(attempt.pk, "The LLM is down.")
        assert received == ["sync 5", f"failed {PipelineStatus.LLM_PROCESSING}"]
    finally:
        signals.onboarding_sync_completed.disconnect(on_sync)
        signals.pipeline_failed.disconnect(on_failed)
