"""The nightly batch in real worker processes: an incremental sync that asks GitHub only for
what changed (counted at the demo GitHub), a team busy onboarding skipped and said so while the
others run, and one failing team among three while the other two get refreshed dashboards."""

from __future__ import annotations

import copy
import datetime
import math
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from onboarding.demo_github.server import DemoGitHubServer
from onboarding.models import GitHubConnection, Membership, Repository, Team
from pipeline import nightly, transitions
from pipeline.invariant import find_drift
from pipeline.models import (
    EmailOutbox,
    Insight,
    PipelineRun,
    PullRequest,
    RunKind,
    StageAttempt,
    WeeklyMetric,
)
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import finish_stages, wait_for
from tests.pipeline.sync_helpers import add_repositories, connect, graphql_requests

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = "tests.pipeline.fault_stages.quick"


def quick_after_sync() -> dict[str, str]:
    later = [s for s in STAGE_ORDER if s != PipelineStatus.SYNCING]
    return {"PIPELINE_STAGE_OVERRIDES": ",".join(f"{s}={QUICK}" for s in later)}


def all_quick() -> dict[str, str]:
    return {"PIPELINE_STAGE_OVERRIDES": ",".join(f"{s}={QUICK}" for s in STAGE_ORDER)}


def begin_batch() -> datetime.datetime:
    """What the 02:00 tick does, at the next whole second (ticks are whole seconds, and a team
    is in the batch when its onboarding finished before the tick). The schedule itself is
    tested in test_nightly.py."""
    tick = math.ceil(time.time())
    wait_for(lambda: time.time() >= tick, timeout=2, interval=0.01)
    nightly.start_batch(tick)
    return datetime.datetime.fromtimestamp(tick, tz=datetime.UTC)


def nightly_run(team: Team) -> PipelineRun | None:
    return PipelineRun.objects.filter(team=team, kind=RunKind.NIGHTLY).first()


def finished(run_of) -> bool:
    run = run_of()
    return run is not None and run.state not in (PipelineRun.State.RUNNING,)


def onboarded_in_process(name: str, server=None) -> Team:
    """A team whose onboarding completed (stages handed off here, jobs marked done)."""
    team = Team.objects.create(name=name)
    user = get_user_model().objects.create_user(
        username=name.lower(), email=f"{name.lower()}@example.com", password="x" * 12
    )
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    if server is not None:
        connect(team, server)
        repositories = add_repositories(team, server)
    else:
        repositories = [
            Repository.objects.create(team=team, github_id=1, full_name=f"{name}/r", selected=True)
        ]
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    finish_stages(run)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'todo'")
    return team


def test_the_nightly_sync_fetches_only_what_changed(start_worker, team, demo_github_dataset):
    dataset = copy.deepcopy(demo_github_dataset)
    server = DemoGitHubServer(dataset=dataset).start()
    try:
        connect(team, server)
        repositories = add_repositories(team, server)
        start_worker(quick_after_sync())
        onboarding = transitions.start_pipeline(team, [r.pk for r in repositories])
        wait_for(lambda: finished(lambda: PipelineRun.objects.get(pk=onboarding.pk)), timeout=120)
        onboarding_requests = len(graphql_requests(server))
        onboarding_prs = StageAttempt.objects.get(run=onboarding, stage="syncing").counts[
            "prs_synced"
        ]

        # Overnight, one PR of one repository changes on GitHub.
        repo = repositories[0]
        repo.refresh_from_db()
        name = repo.full_name.split("/")[1]
        changed = dataset.pulls_by_updated[name][3]
        changed.updated_at = repo.last_synced_at.replace(microsecond=0) + datetime.timedelta(
            seconds=2
        )
        changed.title = "Changed overnight"
        dataset.pulls_by_updated[name].sort(key=lambda pr: pr.updated_at, reverse=True)

        begin_batch()
        wait_for(lambda: finished(lambda: nightly_run(team)), timeout=120)
    finally:
        server.stop()

    run = nightly_run(team)
    assert run.state == PipelineRun.State.COMPLETE
    sync = StageAttempt.objects.get(run=run, stage="syncing")
    nightly_requests = len(graphql_requests(server)) - onboarding_requests
    # One page per repository, stopping at the first PR older than its last sync.
    assert nightly_requests == len(repositories) == sync.counts["graphql_requests"]
    assert onboarding_requests > 3 * nightly_requests
    assert sync.counts["prs_synced"] == 1 and onboarding_prs > 1000
    stored = PullRequest.objects.get(repository=repo, number=changed.number)
    assert stored.title == "Changed overnight"
    assert not EmailOutbox.objects.filter(run=run).exists()
    assert find_drift() == []


def test_a_team_busy_onboarding_is_skipped_and_says_so_while_the_others_run(start_worker):
    busy, idle = onboarded_in_process("Busy"), onboarded_in_process("Idle")
    manual = transitions.restart_pipeline(busy)  # its sync job waits: no sync worker yet
    start_worker(all_quick(), queues="default")

    begin_batch()
    skipped = wait_for(lambda: nightly_run(busy), timeout=60)
    idle_run = wait_for(lambda: nightly_run(idle), timeout=60)
    assert skipped.state == PipelineRun.State.SKIPPED
    assert skipped.error == f"Not started: onboarding run {manual.pk} was running."
    assert idle_run.state == PipelineRun.State.RUNNING

    start_worker(all_quick(), queues="sync,llm")
    wait_for(lambda: finished(lambda: PipelineRun.objects.get(pk=manual.pk)), timeout=60)
    wait_for(lambda: finished(lambda: nightly_run(idle)), timeout=60)

    assert PipelineRun.objects.get(pk=manual.pk).state == PipelineRun.State.COMPLETE
    assert nightly_run(idle).state == PipelineRun.State.COMPLETE
    # The onboarding still e-mails; the nightly run does not.
    assert EmailOutbox.objects.filter(run=manual).exists()
    assert not EmailOutbox.objects.filter(run__kind=RunKind.NIGHTLY).exists()
    assert PipelineRun.objects.filter(team=busy, kind=RunKind.NIGHTLY).count() == 1
    wait_for(lambda: not find_drift())


def test_one_failing_team_does_not_stop_the_others_and_their_dashboards_refresh(
    start_worker, demo_github_small, client
):
    first = onboarded_in_process("First", demo_github_small)
    second = onboarded_in_process("Second", demo_github_small)
    broken = onboarded_in_process("Broken", demo_github_small)
    GitHubConnection.objects.filter(team=broken).delete()  # the team disconnected GitHub
    start_worker()
    before = timezone.now()

    begin_batch()
    for team in (first, second, broken):
        wait_for(lambda team=team: finished(lambda: nightly_run(team)), timeout=180)

    assert nightly_run(broken).state == PipelineRun.State.FAILED
    assert "reconnect GitHub" in nightly_run(broken).error
    for team in (first, second):
        run = nightly_run(team)
        assert run.state == PipelineRun.State.COMPLETE, run.error
        assert [a.stage for a in run.attempts.order_by("started_at")] == list(STAGE_ORDER)
        assert WeeklyMetric.objects.filter(team=team, member_login="").exists()
        assert Insight.objects.filter(team=team, run=run).exists()
        assert run.finished_at >= before
        client.force_login(team.memberships.get().user)
        page = client.get(reverse("dashboard")).content.decode()
        assert "Updated nightly, last at" in page
        assert client.get(reverse("home")).url == reverse("dashboard")
    assert not EmailOutbox.objects.filter(run__kind=RunKind.NIGHTLY).exists()
    wait_for(lambda: not find_drift())
