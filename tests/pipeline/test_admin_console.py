"""The operators' console in the admin: the job list (stalled shown and filtered, team/stage/run
columns, housekeeping hidden, a bounded number of queries), reasons and the audit log, and the
retry/restart/cancel actions on teams and runs."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from onboarding.models import Repository, Team
from pipeline import queue, retention, transitions
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, StaffAction
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages
from tests.pipeline.test_admin import CHANGELIST, job_state, put_job_in_doing, requeue, sql

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456!")


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def make_teams(count: int) -> list[PipelineRun]:
    runs = []
    for i in range(count):
        team = Team.objects.create(name=f"Team {i}")
        repo = Repository.objects.create(team=team, github_id=i, full_name=f"t{i}/r")
        runs.append(transitions.start_pipeline(team, [repo.pk]))
    return runs


def test_a_stalled_job_is_shown_as_stalled_with_its_team_and_run(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    job_id = put_job_in_doing("10 minutes")

    page = staff_client.get(reverse(CHANGELIST)).content.decode()

    assert "Stalled" in page
    assert "Acme" in page
    assert reverse("admin:pipeline_pipelinerun_change", args=[run.pk]) in page
    assert PipelineStatus.SYNCING.label in page
    assert "heartbeat 10" in page  # the worker column: its last heartbeat, 10 minutes ago
    assert job_state(job_id) == "doing"


def test_the_stalled_filter_lists_only_jobs_whose_worker_is_dead(staff_client):
    dead, alive, queued = make_teams(3)
    ids = dict(sql("SELECT (args->>'run_id')::bigint, id FROM procrastinate_jobs"))
    [(dead_worker,)] = sql(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '10 minutes')"
        " RETURNING id"
    )
    [(live_worker,)] = sql("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
    sql(
        "UPDATE procrastinate_jobs SET status='doing', worker_id=%s WHERE id=%s",
        [dead_worker, ids[dead.pk]],
    )
    sql(
        "UPDATE procrastinate_jobs SET status='doing', worker_id=%s WHERE id=%s",
        [live_worker, ids[alive.pk]],
    )

    response = staff_client.get(reverse(CHANGELIST), {"liveness": "stalled"})

    shown = [job.pk for job in response.context["cl"].result_list]
    assert shown == [ids[dead.pk]]


def test_the_stalled_filter_with_nothing_stalled_is_an_empty_list(staff_client):
    make_teams(2)

    response = staff_client.get(reverse(CHANGELIST), {"liveness": "stalled"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_filters_by_team_and_stage(staff_client):
    first, second = make_teams(2)
    finish_stages(second, [PipelineStatus.SYNCING])

    by_team = staff_client.get(reverse(CHANGELIST), {"team": str(second.team_id)})
    by_stage = staff_client.get(
        reverse(CHANGELIST), {"stage": queue.STAGE_JOBS[PipelineStatus.LLM_PROCESSING].task_name}
    )

    assert {j.run_id for j in by_team.context["cl"].result_list} == {second.pk}
    assert len(by_team.context["cl"].result_list) == 2  # its sync and detect jobs
    assert [j.run_id for j in by_stage.context["cl"].result_list] == [second.pk]


def test_housekeeping_jobs_are_hidden_unless_asked_for(staff_client, team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])
    housekeeping = queue.defer(queue.JobSpec(retention.TASK_NAME, retention.QUEUE), timestamp=0)

    default = staff_client.get(reverse(CHANGELIST)).context["cl"].result_list
    everything = staff_client.get(reverse(CHANGELIST), {"jobs": "all"}).context["cl"].result_list

    assert housekeeping not in [j.pk for j in default]
    assert housekeeping in [j.pk for j in everything]


def page_queries(staff_client, params=None) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(reverse(CHANGELIST), params or {})
    assert response.status_code == 200
    return [q["sql"] for q in queries]


def test_the_job_list_costs_the_same_queries_for_3_or_60_jobs(staff_client):
    make_teams(3)
    small = page_queries(staff_client)
    make_teams(57)
    large = page_queries(staff_client)

    assert len(small) == len(large)
    # session, user, stalled set, team filter choices, planner estimate, exact count (small
    # results only), the page itself (team, run and age are subqueries of it)
    assert len(large) == 7


def test_a_big_job_list_is_never_counted(staff_client, monkeypatch):
    from pipeline import admin_jobs

    make_teams(3)
    monkeypatch.setattr(admin_jobs, "EXACT_COUNT_BELOW", 1)  # every result is "big"

    queries = page_queries(staff_client, {"liveness": "requeueable"})

    assert not [q for q in queries if "COUNT(" in q.upper() and "EXPLAIN" not in q.upper()]


def test_requeue_asks_for_a_reason_and_does_nothing_without_one(staff_client, team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])
    job_id = put_job_in_doing("10 minutes")

    first = staff_client.post(
        reverse(CHANGELIST), {"action": "requeue", "_selected_action": [str(job_id)]}
    )
    empty = requeue(staff_client, job_id, reason="  ")

    assert "Reason (kept in the audit log)" in first.content.decode()
    assert "A reason is required" in empty.content.decode()
    assert job_state(job_id) == "doing"
    assert not StaffAction.objects.exists()


def test_each_requeue_is_audited_with_its_reason_and_outcome(
    staff_client, staff, team, repositories
):
    transitions.start_pipeline(team, [repositories[0].pk])
    job_id = put_job_in_doing("10 minutes")

    requeue(staff_client, job_id, reason="host vm-7 was lost")
    requeue(staff_client, job_id, reason="second click")

    first, second = StaffAction.objects.order_by("id")
    assert (first.user, first.action, first.target, first.team_id) == (
        staff,
        "requeue",
        f"job {job_id}",
        team.pk,
    )
    assert first.reason == "host vm-7 was lost" and first.succeeded
    assert "stalled, re-queued" in first.outcome
    # The first click superseded the dead worker's job (it ended; a new job carries the stage).
    assert not second.succeeded and "superseded by a newer job" in second.outcome
    page = staff_client.get(reverse("admin:pipeline_staffaction_changelist")).content.decode()
    assert "host vm-7 was lost" in page
    change = staff_client.get(reverse("admin:pipeline_staffaction_change", args=[first.pk]))
    assert 'name="reason"' not in change.content.decode()  # read-only


def team_action(staff_client, action: str, team: Team, reason: str):
    return staff_client.post(
        reverse("admin:onboarding_team_changelist"),
        {"action": action, "_selected_action": [str(team.pk)], "confirm": "yes", "reason": reason},
        follow=True,
    )


def test_cancel_from_the_team_list_ends_the_run_and_is_audited(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])

    response = team_action(staff_client, "cancel", team, "customer asked to stop")

    run.refresh_from_db()
    team.refresh_from_db()
    assert "cancelled" in response.content.decode()
    assert run.state == PipelineRun.State.CANCELLED
    assert team.pipeline_status == PipelineStatus.NOT_STARTED
    assert find_drift() == []
    entry = StaffAction.objects.get()
    assert (entry.action, entry.reason, entry.succeeded) == (
        "cancel",
        "customer asked to stop",
        True,
    )


def test_retry_of_a_team_that_has_not_failed_is_refused_and_audited(
    staff_client, team, repositories
):
    transitions.start_pipeline(team, [repositories[0].pk])

    response = team_action(staff_client, "retry", team, "try again")

    assert "Only a failed pipeline can be retried" in response.content.decode()
    entry = StaffAction.objects.get()
    assert not entry.succeeded and "Only a failed pipeline" in entry.outcome


def test_restart_from_the_run_list_starts_the_team_over(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(run, [PipelineStatus.SYNCING])

    staff_client.post(
        reverse("admin:pipeline_pipelinerun_changelist"),
        {
            "action": "restart",
            "_selected_action": [str(run.pk)],
            "confirm": "yes",
            "reason": "bad data",
        },
        follow=True,
    )

    run.refresh_from_db()
    assert run.state == PipelineRun.State.SUPERSEDED
    new = PipelineRun.objects.get(state=PipelineRun.State.RUNNING)
    assert new.stage == PipelineStatus.SYNCING
    assert find_drift() == []
    assert StaffAction.objects.get().action == "restart"


def test_the_team_page_shows_the_run_history_with_stage_timings(staff_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(run, [PipelineStatus.SYNCING])

    page = staff_client.get(
        reverse("admin:onboarding_team_change", args=[team.pk])
    ).content.decode()

    assert f"run {run.pk}" in page
    assert "Onboarding" in page
    assert "syncing" in page and " ms" in page


def test_admin_labels_read_correctly(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()

    assert reverse("operations") in page  # the front page links the live operations page
    assert "E-mail outboxes" in page
    assert "GitHub connections" in page
    assert "Email outboxs" not in page and "Git hub" not in page
