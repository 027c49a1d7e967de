"""Insight rules on histories built for them: each rule fires on its own data, says when the
sample is too small, and a re-run replaces the run's insights."""

from __future__ import annotations

import datetime

import pytest

from onboarding.models import Team
from pipeline.models import Insight
from pipeline.stages import insights, metrics
from tests.pipeline.prs import make_pr, make_run

pytestmark = pytest.mark.django_db

FIRST_MONDAY = datetime.datetime(2026, 1, 5, 9, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


class History:
    """Writes weeks of merged PRs: ``ai`` of ``count`` AI-assisted, every PR opened on the
    week's Monday from 09:00 and merged the same week."""

    def __init__(self, repository) -> None:
        self.repository = repository
        self.number = 0

    def week(
        self,
        index: int,
        *,
        count: int = 10,
        ai: int = 0,
        ai_cycle: float = 5,
        human_cycle: float = 20,
        review_wait: float | None = 2,
        size: int = 100,
        tools: tuple[tuple[str, ...], ...] = (("Claude Code",),),
    ) -> None:
        monday = FIRST_MONDAY + datetime.timedelta(weeks=index)
        for i in range(count):
            self.number += 1
            is_ai = i < ai
            created = monday + i * HOUR
            make_pr(
                self.repository,
                self.number,
                author=f"dev{i % 3}",
                created=created,
                merged=created + (ai_cycle if is_ai else human_cycle) * HOUR,
                first_review=None if review_wait is None else created + review_wait * HOUR,
                additions=size,
                ai=is_ai,
                tools=list(tools[i % len(tools)]) if is_ai else [],
            )


def analyse(run) -> dict[str, Insight]:
    metrics.run(run)
    insights.run(run)
    return {i.kind: i for i in Insight.objects.filter(run=run)}


@pytest.fixture
def history(repositories) -> History:
    return History(repositories[0])


@pytest.fixture
def eight_weeks(team, repositories, history):
    """Four quiet weeks, then four weeks with more AI, slower first reviews and bigger PRs."""
    for index in range(4):
        history.week(index, ai=1, review_wait=2, size=100)
    recent_tools = (
        ("Claude Code",),
        ("Cursor",),
        ("Cursor",),
        ("Claude Code", "Copilot"),
        ("Claude Code", "Copilot"),
    )
    for index in range(4, 8):
        history.week(index, ai=5, review_wait=10, size=400, tools=recent_tools)
    return make_run(team, repositories[:1])


def test_ai_adoption_reports_the_share_and_its_rise(eight_weeks):
    found = analyse(eight_weeks)["ai_adoption"]

    # 4 x 1 + 4 x 5 AI-assisted PRs out of 80 merged; 10% then 50%.
    assert found.headline == "30% of merged PRs were AI-assisted, rising to 50% lately"
    assert found.severity == Insight.Severity.POSITIVE
    assert found.numbers["ai_share"] == 0.3
    assert (found.numbers["previous_share"], found.numbers["recent_share"]) == (0.1, 0.5)
    assert found.numbers["trend"] == "rising"
    assert "up from 10%" in found.detail


def test_ai_cycle_time_compares_medians_when_both_sides_have_enough_prs(eight_weeks):
    found = analyse(eight_weeks)["ai_cycle_time"]

    assert found.headline == "AI-assisted PRs merge 75% faster"
    assert found.severity == Insight.Severity.POSITIVE
    assert found.numbers["ai_cycle_time_median_hours"] == pytest.approx(5)
    assert found.numbers["human_cycle_time_median_hours"] == pytest.approx(20)
    assert (found.numbers["ai_prs_merged"], found.numbers["human_prs_merged"]) == (24, 56)
    assert found.numbers["sample_too_small"] is False
    assert "5.0 h for 24 AI-assisted PRs, 20 h for 56 other PRs" in found.detail


def test_rising_time_to_first_review_is_a_review_bottleneck_warning(eight_weeks):
    found = analyse(eight_weeks)["review_bottleneck"]

    assert found.headline == "Time to first review is rising (10 h)"
    assert found.severity == Insight.Severity.WARNING
    assert found.numbers["recent"] == pytest.approx(10)
    assert found.numbers["previous"] == pytest.approx(2)
    assert (found.numbers["recent_prs"], found.numbers["previous_prs"]) == (40, 40)
    assert "bottleneck" in found.detail


def test_growing_prs_are_a_size_warning(eight_weeks):
    found = analyse(eight_weeks)["pr_size_trend"]

    assert found.headline == "PRs are getting bigger (400 lines)"
    assert found.severity == Insight.Severity.WARNING
    assert (found.numbers["previous"], found.numbers["recent"]) == (100, 400)


def test_top_tools_counts_prs_per_tool_most_used_first(eight_weeks):
    found = analyse(eight_weeks)["top_tools"]

    assert found.headline == "Claude Code is the most used AI tool (16 PRs)"
    assert found.numbers["tools"] == [
        {"tool": "Claude Code", "prs": 16},
        {"tool": "Copilot", "prs": 8},
        {"tool": "Cursor", "prs": 8},
    ]
    assert found.numbers["ai_prs"] == 24
    assert "Claude Code appears in 67% of them" in found.detail


def test_warnings_come_first_so_the_top_insight_is_the_one_to_act_on(eight_weeks):
    analyse(eight_weeks)

    assert list(Insight.objects.filter(run=eight_weeks).values_list("kind", "position")) == [
        ("review_bottleneck", 0),
        ("pr_size_trend", 1),
        ("ai_adoption", 2),
        ("ai_cycle_time", 3),
        ("top_tools", 4),
    ]


def test_faster_reviews_smaller_prs_and_slower_ai_prs_read_the_other_way(
    team, repositories, history
):
    for index in range(4):
        history.week(index, ai=5, ai_cycle=30, human_cycle=10, review_wait=12, size=500)
    for index in range(4, 8):
        history.week(index, ai=5, ai_cycle=30, human_cycle=10, review_wait=3, size=100)

    found = analyse(make_run(team, repositories[:1]))

    assert found["review_bottleneck"].headline == "Reviews start sooner (3.0 h)"
    assert found["review_bottleneck"].severity == Insight.Severity.POSITIVE
    assert found["pr_size_trend"].headline == "PRs are getting smaller (100 lines)"
    assert found["ai_cycle_time"].headline == "AI-assisted PRs take 200% longer to merge"
    assert found["ai_cycle_time"].severity == Insight.Severity.WARNING
    assert found["ai_adoption"].numbers["trend"] == "steady"
    assert found["ai_adoption"].severity == Insight.Severity.INFO


def test_small_samples_are_called_too_small_instead_of_compared(team, repositories, history):
    # One week: 3 AI-assisted and 9 other PRs, no earlier period to compare with.
    history.week(0, count=12, ai=3)
    run = make_run(team, repositories[:1])

    found = analyse(run)

    cycle = found["ai_cycle_time"]
    assert cycle.headline == "Too few PRs yet to compare AI-assisted and other cycle times"
    assert "sample is too small" in cycle.detail
    assert "so far 3 AI-assisted and 9 other PRs were merged" in cycle.detail
    assert cycle.numbers["sample_too_small"] is True
    for kind in ("review_bottleneck", "pr_size_trend"):
        assert found[kind].numbers["sample_too_small"] is True
        assert "sample is too small" in found[kind].detail
    assert "too small to say whether adoption is changing" in found["ai_adoption"].detail
    # What could be concluded ranks before what could not.
    kinds = list(Insight.objects.filter(run=run).values_list("kind", flat=True))
    assert kinds[:2] == ["ai_adoption", "top_tools"]


def test_recomputing_replaces_the_teams_insights_including_earlier_runs(
    eight_weeks, team, repositories
):
    other_team_run = make_run(Team.objects.create(name="Other"), [])
    kept = Insight.objects.create(
        team=other_team_run.team, run=other_team_run, kind="k", headline="h", detail="d"
    )
    earlier = Insight.objects.create(team=team, run=None, kind="old", headline="h", detail="d")
    analyse(eight_weeks)
    first_ids = set(Insight.objects.filter(run=eight_weeks).values_list("id", flat=True))

    insights.run(eight_weeks)

    assert Insight.objects.filter(team=team).count() == 5
    again = set(Insight.objects.filter(run=eight_weeks).values_list("id", flat=True))
    assert len(again) == 5 and not first_ids & again
    assert not Insight.objects.filter(pk=earlier.pk).exists()
    assert Insight.objects.filter(pk=kept.pk).exists()


def test_a_team_without_prs_gets_one_honest_insight(team, repositories):
    run = make_run(team, repositories)

    assert insights.run(run) == {"insights": 1, "warnings": 0}
    (only,) = Insight.objects.filter(run=run)
    assert only.kind == "no_data"
    assert only.headline == "No pull requests to analyse yet"


def test_ai_prs_without_a_named_tool_say_no_tool_was_identified(team, repositories, history):
    history.week(0, count=4, ai=2, tools=((),))

    found = analyse(make_run(team, repositories[:1]))

    assert found["top_tools"].headline == "No AI tool identified"
    assert found["top_tools"].numbers == {"tools": [], "ai_prs": 2}
