"""Every surface tells the same numbers: after a second run on a smaller selection, the dashboard
headline, its charts, the PR table, the insights, the e-mail and the status JSON all describe
that run's repositories and window (pipeline.scope), and nothing of the first run leaks in."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse

from onboarding.models import Repository
from pipeline import transitions
from pipeline.models import AIVerdict, Insight, PipelineRun, WeeklyMetric
from pipeline.scope import week_of, window_start
from pipeline.stages import email as email_stage
from pipeline.stages import insights, metrics
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.pipeline.prs import at, make_pr

pytestmark = pytest.mark.django_db

# The runs start here (not today): their window is the SYNC_WINDOW_DAYS before.
RUN_START = at("2026-06-01", 9)


def run_pipeline(team, repositories, started_at) -> PipelineRun:
    """A real run in this process: sync and detect are the fixture's rows, metrics and insights
    the real stages; the last hand-off completes it and writes the e-mail outbox."""
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    PipelineRun.objects.filter(pk=run.pk).update(started_at=started_at)
    for stage in STAGE_ORDER:
        attempt = transitions.begin_stage(run.pk, stage, job_id=None)
        counts = {}
        if stage == PipelineStatus.COMPUTING_METRICS:
            counts = metrics.run(attempt.run)
        elif stage == PipelineStatus.COMPUTING_INSIGHTS:
            counts = insights.run(attempt.run)
        transitions.complete_stage(attempt.pk, counts)
    run.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE
    return run


@pytest.fixture
def six_repositories(team) -> list[Repository]:
    repositories = [
        Repository.objects.create(team=team, github_id=500 + i, full_name=f"echo/service-{i}")
        for i in range(6)
    ]
    number = 0
    for index, repository in enumerate(repositories):
        # Each repository: a different number of PRs over ten weeks, some AI-assisted.
        for i in range(4 + 3 * index):
            number += 1
            created = at("2026-03-16", 9) + datetime.timedelta(days=5 * i, hours=index)
            make_pr(
                repository,
                number,
                created=created,
                merged=None if i % 4 == 3 else created + datetime.timedelta(hours=6 + i),
                ai=(i + index) % 3 == 0,
                tools=["Claude Code"],
            )
        # An old PR merged inside the window counts as merged (not as opened) ...
        number += 1
        make_pr(repository, number, created=at("2026-01-12"), merged=at("2026-03-20"), ai=index < 2)
        # ... and one merged before the window (synced because it was updated lately) counts
        # nowhere, and must not pull the charts' first week back.
        number += 1
        make_pr(repository, number, created=at("2026-01-05"), merged=at("2026-01-20"), ai=True)
    return repositories


def numbers_on_the_dashboard(client) -> dict[str, str]:
    page = client.get(reverse("dashboard")).content.decode()
    found = dict(re.findall(r'data-number="(\w+)">([^<]*)<', page))
    found["table"] = re.search(r"Page 1 of \d+ · (\d+) pull requests", page).group(1)
    found["page"] = page
    return found


def test_every_surface_shows_the_latest_runs_counts(member_client, team, six_repositories):
    first = run_pipeline(team, six_repositories, RUN_START)
    everything = numbers_on_the_dashboard(member_client)

    chosen = six_repositories[3:5]
    second = run_pipeline(team, chosen, RUN_START + datetime.timedelta(days=1))

    # The truth, counted here from the fixture's rows with the scope's definitions.
    start = window_start(second)
    prs = [
        pr
        for repo in chosen
        for pr in repo.pull_requests.select_related("ai_verdict")
        if pr.created_at >= start or (pr.merged_at and pr.merged_at >= start)
    ]
    merged = [pr for pr in prs if pr.merged_at and pr.merged_at >= start]
    ai_merged = [pr for pr in merged if pr.ai_verdict.is_ai_assisted]
    expected = {
        "prs": len(prs),
        "merged": len(merged),
        "ai_merged": len(ai_merged),
        "share": round(100 * len(ai_merged) / len(merged)),
    }
    assert expected["prs"] < int(everything["prs"])  # the two selections really differ

    shown = numbers_on_the_dashboard(member_client)
    # The headline and the PR table.
    assert int(shown["prs"]) == expected["prs"]
    assert int(shown["table"]) == expected["prs"]
    assert int(shown["merged"]) == expected["merged"]
    assert int(shown["ai_merged"]) == expected["ai_merged"]
    assert shown["ai_share"] == f"{expected['share']}%"
    assert (
        f"AI-assisted share of merged PRs ({expected['ai_merged']} of {expected['merged']})"
        in shown["page"]
    )
    assert "echo/service-0" not in shown["page"]  # a repository of the first run only

    # The charts: their weekly rows sum to the headline and start at the window's first week.
    weeks = WeeklyMetric.objects.filter(team=team, run=second, member_login="").order_by(
        "week_start"
    )
    assert sum(w.prs_merged for w in weeks) == expected["merged"]
    assert sum(w.ai_prs_merged for w in weeks) == expected["ai_merged"]
    assert weeks.first().week_start == week_of(start)
    first_label = f"{week_of(start):%b} {week_of(start).day}"
    assert f">{first_label}</text>" in shown["page"]

    # The insights: only the second run's (the first run's may stay stored, never shown),
    # counting the same merged PRs.
    assert re.findall(r"<h3>([^<]+)</h3>", shown["page"]) == list(
        Insight.objects.filter(run=second).order_by("position").values_list("headline", flat=True)
    )
    first_only = set(Insight.objects.filter(run=first).values_list("headline", flat=True)) - set(
        Insight.objects.filter(run=second).values_list("headline", flat=True)
    )
    assert first_only and not [h for h in first_only if h in shown["page"]]
    adoption = Insight.objects.get(team=team, run=second, kind="ai_adoption")
    assert adoption.numbers["prs_merged"] == expected["merged"]
    assert adoption.numbers["ai_prs_merged"] == expected["ai_merged"]
    assert adoption.headline.startswith(f"{expected['share']}% of merged PRs")
    assert adoption.headline in shown["page"]

    # The e-mail of the second run.
    text = email_stage.build_message(email_stage.read_for_sending(second.email.pk)).body
    assert f"We analysed {expected['prs']} pull requests opened or merged between" in text
    assert "in 2 repositories: echo/service-3, echo/service-4." in text
    assert (
        f"AI-assisted share of merged PRs: {expected['share']}% "
        f"({expected['ai_merged']} of {expected['merged']} merged PRs)."
    ) in text

    # The status JSON.
    status = member_client.get(reverse("progress_status")).json()["dashboard"]
    assert status["run"] == second.pk
    assert status["repositories"] == ["echo/service-3", "echo/service-4"]
    assert status["pull_requests"] == expected["prs"]
    assert status["merged"] == expected["merged"]
    assert status["ai_assisted_merged"] == expected["ai_merged"]
    assert status["first_week"] == week_of(start).isoformat()


def test_a_run_in_progress_changes_nothing_on_the_dashboard(member_client, team, six_repositories):
    run_pipeline(team, six_repositories, RUN_START)
    before = numbers_on_the_dashboard(member_client)
    keys = ("prs", "merged", "ai_merged", "ai_share", "table")

    # A second run on one repository gets through metrics and insights, and re-scores every
    # verdict meanwhile (as a rescore run would), but has not completed.
    run = transitions.start_pipeline(team, [six_repositories[0].pk])
    PipelineRun.objects.filter(pk=run.pk).update(started_at=RUN_START + datetime.timedelta(days=1))
    AIVerdict.objects.filter(team=team).update(is_ai_assisted=True)
    for stage in STAGE_ORDER[:-1]:
        attempt = transitions.begin_stage(run.pk, stage, job_id=None)
        counts = {}
        if stage == PipelineStatus.COMPUTING_METRICS:
            counts = metrics.run(attempt.run)
        transitions.complete_stage(attempt.pk, counts)
    attempt = transitions.begin_stage(run.pk, STAGE_ORDER[-1], job_id=None)
    insights.run(attempt.run)

    during = numbers_on_the_dashboard(member_client)
    assert {k: during[k] for k in keys} == {k: before[k] for k in keys}
    assert re.findall(r'<svg class="chart".*?</svg>', during["page"], flags=re.S) == re.findall(
        r'<svg class="chart".*?</svg>', before["page"], flags=re.S
    )
    assert re.findall(r"<h3>([^<]+)</h3>", during["page"]) == re.findall(
        r"<h3>([^<]+)</h3>", before["page"]
    )

    # Completed: the dashboard moves to the new run all at once.
    transitions.complete_stage(attempt.pk, {})
    after = numbers_on_the_dashboard(member_client)
    assert after["ai_share"] == "100%"
    assert int(after["prs"]) < int(before["prs"])
