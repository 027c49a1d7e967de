"""The dashboard: weekly SVG charts, insights, and the PR table with verdicts and evidence."""

from __future__ import annotations

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from onboarding.models import Repository, Team
from pipeline import transitions
from pipeline.models import AIVerdict, Insight, PipelineRun, PullRequest, WeeklyMetric
from pipeline.status import PipelineStatus

pytestmark = pytest.mark.django_db

MONDAY = datetime.date(2026, 9, 7)


def add_pr(team: Team, repository: Repository, number: int, **fields) -> PullRequest:
    created = timezone.now() - datetime.timedelta(days=number)
    return PullRequest.objects.create(
        team=team,
        repository=repository,
        number=number,
        title=fields.pop("title", f"Change {number}"),
        state=fields.pop("state", PullRequest.State.MERGED),
        author_login=fields.pop("author_login", "ada"),
        created_at=created,
        updated_at=created,
        **fields,
    )


def complete_run(
    team: Team, repositories: list[Repository], started_at: datetime.datetime | None = None
) -> PipelineRun:
    """A completed run of ``repositories``: what the dashboard describes (pipeline.scope)."""
    started = started_at or timezone.now() - datetime.timedelta(minutes=5)
    return PipelineRun.objects.create(
        team=team,
        stage=PipelineStatus.COMPLETE,
        state=PipelineRun.State.COMPLETE,
        repository_ids=[r.pk for r in repositories],
        started_at=started,
        finished_at=started + datetime.timedelta(minutes=1),
    )


@pytest.fixture
def completed(team, repositories) -> PipelineRun:
    return complete_run(team, repositories)


def add_weeks(team: Team, count: int, run: PipelineRun | None = None) -> list[WeeklyMetric]:
    """Weekly rows of ``run`` (the metrics stage writes them per run)."""
    return [
        WeeklyMetric.objects.create(
            team=team,
            run=run,
            week_start=MONDAY + datetime.timedelta(weeks=i),
            prs_opened=10 + i,
            prs_merged=10 + i,
            ai_prs_merged=i,
            ai_share=i / (10 + i),
            ai_cycle_time_median_hours=None if i == 1 else 5.0 + i,
            human_cycle_time_median_hours=20.0 - i,
        )
        for i in range(count)
    ]


def test_dashboard_draws_the_three_weekly_charts_as_svg(member_client, team, repositories):
    run = complete_run(
        team,
        repositories,
        started_at=timezone.make_aware(
            datetime.datetime.combine(MONDAY, datetime.time(9)) + datetime.timedelta(days=60)
        ),
    )
    add_weeks(team, 6, run)
    response = member_client.get(reverse("dashboard"))
    page = response.content.decode()
    charts = re.findall(r'<svg class="chart".*?</svg>', page, flags=re.S)
    assert len(charts) == 3
    share, cycle, merged = charts
    assert 'aria-label="AI-assisted share of merged PRs per week"' in share
    # One bar per week with a non-zero share (week 0 has none), each with its value in a tooltip.
    assert share.count("<rect") == 5
    assert "Sep 14: AI-assisted share of merged PRs 9.1%" in share
    # Cycle time: the AI line breaks at the week with no AI-assisted PR instead of dropping to 0.
    assert cycle.count("<polyline") == 3
    assert "Sep 14: Not AI-assisted 19.0h" in cycle
    assert "Sep 14: AI-assisted" not in cycle
    # PRs merged: stacked AI / not AI bars.
    assert "Oct 12: AI-assisted 5" in merged
    assert "Oct 12: Not AI-assisted 10" in merged


def test_member_rows_do_not_leak_into_the_team_charts(member_client, team, repositories):
    run = complete_run(
        team,
        repositories,
        started_at=timezone.make_aware(
            datetime.datetime.combine(MONDAY, datetime.time(9)) + datetime.timedelta(days=60)
        ),
    )
    add_weeks(team, 2, run)
    WeeklyMetric.objects.create(
        team=team,
        run=run,
        week_start=MONDAY,
        member_login="ada",
        prs_merged=999,
        ai_prs_merged=999,
    )
    page = member_client.get(reverse("dashboard")).content.decode()
    assert page.count('<svg class="chart"') == 3
    assert "999" not in page


def test_only_the_shown_runs_weeks_are_charted(member_client, team, repositories):
    started = timezone.make_aware(
        datetime.datetime.combine(MONDAY, datetime.time(9)) + datetime.timedelta(days=60)
    )
    shown = complete_run(team, repositories, started_at=started)
    add_weeks(team, 2, shown)
    running = PipelineRun.objects.create(
        team=team,
        stage=PipelineStatus.COMPUTING_INSIGHTS,
        repository_ids=[repositories[0].pk],
        started_at=started + datetime.timedelta(days=1),
    )
    WeeklyMetric.objects.create(
        team=team, run=running, week_start=MONDAY, prs_merged=777, ai_prs_merged=777
    )
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "Sep 7: AI-assisted 0" not in page  # week 0 of the shown run has no AI PR
    assert "777" not in page


def test_dashboard_without_metrics_says_so_instead_of_empty_charts(member_client, team):
    Team.objects.filter(pk=team.pk).update(pipeline_status=PipelineStatus.SYNCING)
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "<svg" not in page
    assert "No weekly metrics yet" in page
    assert "The first analysis is still running" in page


def test_insights_are_shown(member_client, team, completed):
    Insight.objects.create(
        team=team,
        run=completed,
        kind="ai_adoption",
        headline="A third of merged PRs are AI-assisted",
        detail="Up from a tenth four weeks ago.",
        severity=Insight.Severity.POSITIVE,
    )
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "A third of merged PRs are AI-assisted" in page
    assert "Up from a tenth four weeks ago." in page


def test_pr_table_shows_each_verdict_with_its_evidence(
    member_client, team, repositories, completed
):
    signed = add_pr(team, repositories[0], 1, title="Add retries")
    AIVerdict.objects.create(
        pull_request=signed,
        team=team,
        is_ai_assisted=True,
        source=AIVerdict.Source.SIGNATURE,
        tools=["Claude Code"],
        signature_hits=[
            {
                "tool": "Claude Code",
                "marker": "co-author-trailer",
                "evidence": "Co-Authored-By: Claude <noreply@anthropic.com>",
            }
        ],
    )
    judged = add_pr(team, repositories[1], 2, title="Refactor parser")
    AIVerdict.objects.create(
        pull_request=judged,
        team=team,
        is_ai_assisted=False,
        source=AIVerdict.Source.LLM,
        llm_assisted=False,
        llm_confidence=0.82,
        llm_reason="Hand-written commit messages and incremental review fixes.",
    )
    add_pr(team, repositories[2], 3, title="Not analysed yet <script>")
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "acme/repo-0#1" in page
    assert "AI-assisted</span>" in page
    assert "Claude Code: Co-Authored-By: Claude &lt;noreply@anthropic.com&gt;" in page
    assert "LLM (82% confident): Hand-written commit messages" in page
    assert "not analysed" in page
    # PR text is untrusted: rendered escaped.
    assert "Not analysed yet &lt;script&gt;" in page


def test_pr_table_is_paginated_and_filters_ai_assisted(
    member_client, team, repositories, completed
):
    for number in range(1, 31):
        pr = add_pr(team, repositories[0], number)
        AIVerdict.objects.create(pull_request=pr, team=team, is_ai_assisted=number % 10 == 0)
    first = member_client.get(reverse("dashboard")).content.decode()
    assert "Page 1 of 2 · 30 pull requests" in first
    assert "acme/repo-0#1<" in first
    assert "acme/repo-0#30" not in first
    second = member_client.get(reverse("dashboard"), {"page": 2}).content.decode()
    assert "Page 2 of 2" in second
    assert "acme/repo-0#30" in second
    flagged = member_client.get(reverse("dashboard"), {"ai": "1"}).content.decode()
    assert "3 pull requests" in flagged
    assert "acme/repo-0#10" in flagged
    assert "acme/repo-0#11" not in flagged


def test_htmx_page_change_returns_only_the_table(member_client, team, repositories, completed):
    for number in range(1, 31):
        add_pr(team, repositories[0], number)
    response = member_client.get(
        reverse("dashboard"), {"page": 2}, headers={"HX-Request": "true", "HX-Target": "pr-table"}
    )
    page = response.content.decode()
    assert "<html" not in page
    assert "Page 2 of 2" in page


def test_another_teams_data_never_appears(member_client, team, other_team):
    foreign_repo = Repository.objects.get(team=other_team)
    add_pr(other_team, foreign_repo, 7, title="Globex secret merger")
    add_weeks(other_team, 3)
    Insight.objects.create(team=other_team, kind="x", headline="Globex insight", detail="d")
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "Globex secret merger" not in page
    assert "Globex insight" not in page
    assert "<svg" not in page


def test_dashboard_says_when_detection_used_signatures_only(member_client, team, repositories):
    run = transitions.start_pipeline(team, [repositories[0].pk])
    PipelineRun.objects.filter(pk=run.pk).update(
        summary={
            "llm": {
                "configured": False,
                "message": "No LLM is configured: AI detection used signatures only.",
            }
        }
    )
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "No LLM is configured: AI detection used signatures only." in page


def test_markers_on_a_pr_not_counted_as_ai_are_labelled_as_such(
    member_client, team, repositories, completed
):
    reviewed = add_pr(team, repositories[0], 1, title="Bump eslint")
    AIVerdict.objects.create(
        pull_request=reviewed,
        team=team,
        is_ai_assisted=False,
        source=AIVerdict.Source.NONE,
        signature_hits=[{"tool": "CodeRabbit", "evidence": "reviewed by coderabbitai[bot]"}],
    )
    page = member_client.get(reverse("dashboard")).content.decode()
    assert "Markers seen, not counted as AI authorship:" in page
    assert "CodeRabbit: reviewed by coderabbitai[bot]" in page
    assert "no AI marker found" not in page


def test_a_review_bots_summary_reads_as_review_evidence():
    from pipeline.signatures import PRText, detect

    hits = detect(PRText(body="Fix\n\n## Summary by CodeRabbit\n\n* Refactor"))
    lines = dashboard_evidence(hits)

    assert lines == ["CodeRabbit (review only): ## Summary by CodeRabbit"]


def dashboard_evidence(hits):
    from onboarding.dashboard import evidence_of
    from pipeline.models import AIVerdict

    return evidence_of(AIVerdict(signature_hits=[h.as_json() for h in hits]))


def test_insights_refer_only_to_columns_the_dashboard_shows(member_client, team, completed):
    from pipeline import insight_rules

    slower = insight_rules.TeamFacts(
        prs=40,
        cycle_ai_prs=20,
        cycle_human_prs=20,
        ai_cycle_median_hours=30.0,
        human_cycle_median_hours=10.0,
    )
    faster = insight_rules.TeamFacts(
        prs=40,
        cycle_ai_prs=20,
        cycle_human_prs=20,
        ai_cycle_median_hours=5.0,
        human_cycle_median_hours=10.0,
    )
    for position, facts in enumerate((slower, faster)):
        draft = insight_rules.ai_cycle_time(facts)
        Insight.objects.create(
            team=team,
            run=completed,
            kind=draft.kind,
            headline=draft.headline,
            detail=draft.detail,
            position=position,
        )
    add_pr(team, Repository.objects.filter(team=team).first(), 1)
    page = member_client.get(reverse("dashboard")).content.decode()
    headers = re.findall(r"<th>([^<]+)</th>", page)
    details = re.findall(r'<article class="card insight[^"]*">.*?<p>([^<]+)</p>', page, flags=re.S)
    assert len(details) == 2
    mentioned = {
        column
        for detail in details
        for column in re.findall(r"the (\w[\w ]*?) column of the pull-request table", detail)
    }
    assert mentioned == {"Review rounds", "Size"}
    assert mentioned <= set(headers)
    assert "review columns" not in page
