"""Re-scoring on a catalogue change: a synced team whose verdicts were scored with an older
catalogue gets a ``rescore`` run (detect, metrics, insights; no e-mail, no re-sync), and its
dashboard numbers and stated catalogue version change accordingly."""

from __future__ import annotations

import datetime
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from pipeline import queue, rescore, retention, transitions
from pipeline.models import (
    AIVerdict,
    EmailOutbox,
    PipelineRun,
    PullRequest,
    PullRequestCommit,
    RunKind,
)
from pipeline.signatures import CATALOGUE_VERSION
from pipeline.stages import detect, insights, metrics
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages, wait_for

OLD_VERSION = "2026.11-1"
NOW = timezone.now()


def make_pr(repository, number: int, message: str) -> PullRequest:
    created = NOW - timedelta(days=3 + number)
    pr = PullRequest.objects.create(
        team=repository.team,
        repository=repository,
        number=number,
        title=f"Change {number}",
        body="",
        state=PullRequest.State.MERGED,
        author_login="ada",
        created_at=created,
        updated_at=created,
        merged_at=created + timedelta(hours=2),
    )
    PullRequestCommit.objects.create(
        pull_request=pr,
        sha=f"{number:040x}",
        message=message,
        author_name="Ada",
        author_email="ada@example.com",
    )
    return pr


def run_real_stages(run: PipelineRun) -> None:
    """The stage bodies (no sync), each handed off in-process as the worker would."""
    bodies = {
        PipelineStatus.LLM_PROCESSING: detect.run,
        PipelineStatus.COMPUTING_METRICS: metrics.run,
        PipelineStatus.COMPUTING_INSIGHTS: insights.run,
    }
    for stage, body in bodies.items():
        attempt = transitions.begin_stage(run.pk, stage, job_id=None)
        counts = body(PipelineRun.objects.get(pk=run.pk))
        transitions.complete_stage(attempt.pk, counts)


@pytest.fixture
def member_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def synced_team(team, repositories):
    """Onboarded on one repository, its verdicts scored by the previous catalogue, which did
    not know Crush or OpenHands: 1 of 3 merged PRs counted as AI."""
    repo = repositories[0]
    make_pr(repo, 1, "Add cache\n\nCo-Authored-By: Claude <noreply@anthropic.com>")
    make_pr(repo, 2, "Fix retry\n\nCo-Authored-By: Crush <crush@charm.land>")
    make_pr(repo, 3, "Tidy\n\nCo-authored-by: openhands <openhands@all-hands.dev>")
    make_pr(repo, 4, "Human change")
    run = transitions.start_pipeline(team, [repo.pk])
    finish_stages(run, [PipelineStatus.SYNCING])
    run_real_stages(run)
    # As the previous catalogue scored them.
    AIVerdict.objects.filter(team=team).update(catalogue_version=OLD_VERSION)
    AIVerdict.objects.filter(team=team, pull_request__number__in=[2, 3]).update(
        is_ai_assisted=False, source=AIVerdict.Source.NONE, tools=[], signature_hits=[]
    )
    old_run = PipelineRun.objects.get(pk=run.pk)
    metrics.run(old_run)
    insights.run(old_run)
    return team


def dashboard_numbers(client) -> tuple[str, str]:
    page = client.get("/dashboard/").content.decode()
    ai_merged = page.split('data-number="ai_merged">', 1)[1].split("<", 1)[0]
    catalogue = page.split("data-catalogue>", 1)[1].split("</p>", 1)[0]
    return ai_merged, " ".join(catalogue.split())


@pytest.mark.django_db
@override_settings(OPENAI_API_KEY="", OPENAI_BASE_URL="")
def test_a_new_catalogue_version_rescores_a_synced_team_and_its_dashboard_changes(
    synced_team, member_client
):
    before, stated = dashboard_numbers(member_client)
    assert before == "1"
    assert OLD_VERSION in stated and "re-scored" in stated
    assert rescore.outdated_team_ids() == [synced_team.pk]

    (run,) = rescore.rescore_outdated_teams()

    assert (run.kind, run.stage) == (RunKind.RESCORE, PipelineStatus.LLM_PROCESSING)
    assert rescore.rescore_outdated_teams() == []  # one at a time: the team is running
    run_real_stages(run)
    run.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE
    after, stated = dashboard_numbers(member_client)
    assert after == "3"
    assert stated == f"AI detection: marker catalogue {CATALOGUE_VERSION}."
    assert set(AIVerdict.objects.values_list("catalogue_version", flat=True)) == {CATALOGUE_VERSION}
    assert rescore.outdated_team_ids() == []
    # Only the onboarding run wrote an e-mail.
    assert list(EmailOutbox.objects.values_list("run__kind", flat=True)) == ["onboarding"]


@pytest.mark.django_db
def test_a_team_that_never_completed_onboarding_is_not_rescored(team, repositories):
    pr = make_pr(repositories[0], 1, "x")
    AIVerdict.objects.create(pull_request=pr, team=team, catalogue_version=OLD_VERSION)

    assert rescore.rescore_outdated_teams() == []
    assert not PipelineRun.objects.filter(kind=RunKind.RESCORE).exists()


def test_the_shipped_schedule_looks_for_outdated_teams_every_ten_minutes():
    from pipeline.tasks import app

    [periodic] = [
        task
        for task in app.periodic_registry.periodic_tasks.values()
        if task.task.name == "pipeline.rescore_outdated_catalogue"
    ]
    start = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC).timestamp()
    iterator = periodic.croniter
    iterator.set_current(start_time=start)
    ticks = [iterator.get_next(ret_type=float) for _ in range(4)]

    assert {b - a for a, b in zip(ticks, ticks[1:], strict=False)} == {600.0}


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_rescores_an_outdated_team_from_the_periodic_task(
    team, repositories, start_worker
):
    repo = repositories[0]
    pr = make_pr(repo, 1, "Fix retry\n\nCo-Authored-By: Crush <crush@charm.land>")
    run = transitions.start_pipeline(team, [repo.pk])
    finish_stages(run)  # onboarding completed (in-process); its queued jobs are spent
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'todo'")
    AIVerdict.objects.create(pull_request=pr, team=team, catalogue_version=OLD_VERSION)
    start_worker(env={"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""})

    queue.defer(
        queue.JobSpec("pipeline.rescore_outdated_catalogue", retention.QUEUE),
        timestamp=int(timezone.now().timestamp()),
    )

    def rescored() -> bool:
        return PipelineRun.objects.filter(
            team=team, kind=RunKind.RESCORE, state=PipelineRun.State.COMPLETE
        ).exists()

    wait_for(rescored, timeout=90)
    verdict = AIVerdict.objects.get(pull_request=pr)
    assert verdict.is_ai_assisted and verdict.tools == ["Crush"]
    assert verdict.catalogue_version == CATALOGUE_VERSION
