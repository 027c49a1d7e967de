"""Weekly metrics against numbers computed by hand on a small fixture.

The fixture (weeks start Monday 2026-03-02, 03-09 and 03-16, all UTC):

week of 03-02: #1 alice AI   opened Mon 09:00, reviewed 11:00 (2 h), merged 19:00 (10 h), 120 lines
               #2 bob        opened Tue 00:00, reviewed 04:00 (4 h), merged Wed (24 h), 50 lines
               #3 alice      opened Wed 12:00, reviewed Thu 12:00 (24 h), merged 16:00 (28 h), 300
               #4 alice      opened Sun 23:59:59 (last second of the week), still open
               #5 dependabot (bot) opened Tue 10:00, merged 12:00 (2 h), 4 lines
               #7 alice AI   opened Fri 03-06 12:00 (merged in the third week)
week of 03-09: nothing happens (a quiet week)
week of 03-16: #6 bob AI     opened Mon 00:00:00 (first second of the week), reviewed 01:00 (1 h),
                             merged 08:00 (8 h), 80 lines, a revert
               #7 alice AI   reviewed Mon 12:00 (240 h wait), merged Tue 12:00 (264 h), 1000 lines
A PR in a repository the run did not select, and one of another team, must not count.
"""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.db import connection

from onboarding.models import Repository, Team
from pipeline.models import AIVerdict, PullRequest, WeeklyMetric
from pipeline.stages import metrics
from tests.pipeline.prs import at, make_pr, make_run

pytestmark = pytest.mark.django_db

W1, W2, W3 = datetime.date(2026, 3, 2), datetime.date(2026, 3, 9), datetime.date(2026, 3, 16)


@pytest.fixture
def history(team, repositories):
    a, b, unselected = repositories
    make_pr(
        a,
        1,
        author="alice",
        created=at("2026-03-02", 9),
        first_review=at("2026-03-02", 11),
        merged=at("2026-03-02", 19),
        additions=100,
        deletions=20,
        review_rounds=1,
        ai=True,
    )
    make_pr(
        b,
        2,
        author="bob",
        created=at("2026-03-03"),
        first_review=at("2026-03-03", 4),
        merged=at("2026-03-04"),
        additions=50,
        ai=False,
    )
    make_pr(
        a,
        3,
        author="alice",
        created=at("2026-03-04", 12),
        first_review=at("2026-03-05", 12),
        merged=at("2026-03-05", 16),
        additions=200,
        deletions=100,
        review_rounds=2,
        ai=False,
    )
    make_pr(a, 4, author="alice", created=at("2026-03-08", 23, 59, 59))
    make_pr(
        b,
        5,
        author="dependabot[bot]",
        bot=True,
        created=at("2026-03-03", 10),
        merged=at("2026-03-03", 12),
        additions=2,
        deletions=2,
        ai=False,
    )
    make_pr(
        b,
        6,
        author="bob",
        created=at("2026-03-16"),
        first_review=at("2026-03-16", 1),
        merged=at("2026-03-16", 8),
        additions=40,
        deletions=40,
        is_revert=True,
        ai=True,
    )
    make_pr(
        a,
        7,
        author="alice",
        created=at("2026-03-06", 12),
        first_review=at("2026-03-16", 12),
        merged=at("2026-03-17", 12),
        additions=1000,
        review_rounds=3,
        ai=True,
    )
    # Not in the run's selection, and another team's PR: neither may count.
    make_pr(
        unselected,
        100,
        author="carol",
        created=at("2026-03-03"),
        merged=at("2026-03-03", 5),
        ai=True,
    )
    other = Team.objects.create(name="Other")
    other_repo = Repository.objects.create(team=other, github_id=9, full_name="other/x")
    make_pr(other_repo, 1, author="alice", created=at("2026-03-02"), merged=at("2026-03-02", 1))
    # The run's window starts on W1's Monday, so the team rows start there too.
    window = datetime.timedelta(days=settings.SYNC_WINDOW_DAYS)
    return make_run(team, [a, b], started_at=at("2026-03-02") + window)


def row(team, week: datetime.date, member: str = "") -> WeeklyMetric:
    return WeeklyMetric.objects.get(team=team, week_start=week, member_login=member)


def test_team_week_has_the_hand_computed_counts_medians_and_ai_split(team, history):
    metrics.run(history)

    w1 = row(team, W1)
    # Opened: #1 #2 #3 #4 (Sunday 23:59:59 is still this week) #5 #7.
    assert w1.prs_opened == 6
    assert (w1.prs_merged, w1.ai_prs_merged, w1.ai_share) == (4, 1, 0.25)
    # Cycle times 2, 10, 24, 28 h: median 17, p75 interpolates 24 + 0.25 * (28 - 24).
    assert w1.cycle_time_median_hours == pytest.approx(17)
    assert w1.cycle_time_p75_hours == pytest.approx(25)
    assert w1.ai_cycle_time_median_hours == pytest.approx(10)
    assert w1.human_cycle_time_median_hours == pytest.approx(24)
    assert w1.first_review_median_hours == pytest.approx(4)
    assert w1.review_rounds_avg == pytest.approx(0.75)
    # Sizes of merged PRs 4, 50, 120, 300.
    assert w1.pr_size_median == pytest.approx(85)
    assert w1.ai_pr_size_median == pytest.approx(120)
    assert w1.human_pr_size_median == pytest.approx(50)
    assert w1.reverts == 0


def test_monday_midnight_starts_a_new_week_and_late_merges_count_when_merged(team, history):
    metrics.run(history)

    w3 = row(team, W3)
    assert w3.prs_opened == 1  # #6 at Monday 00:00:00; #7 was opened in the first week
    assert (w3.prs_merged, w3.ai_prs_merged, w3.ai_share) == (2, 2, 1.0)
    assert w3.cycle_time_median_hours == pytest.approx(136)
    assert w3.cycle_time_p75_hours == pytest.approx(200)
    assert w3.ai_cycle_time_median_hours == pytest.approx(136)
    assert w3.human_cycle_time_median_hours is None  # no non-AI PR merged that week
    assert w3.first_review_median_hours == pytest.approx(120.5)
    assert w3.pr_size_median == pytest.approx(540)
    assert w3.human_pr_size_median is None
    assert w3.reverts == 1


def test_a_quiet_week_between_active_ones_gets_an_empty_team_row(team, history):
    metrics.run(history)

    assert list(
        WeeklyMetric.objects.filter(team=team, member_login="").values_list("week_start", flat=True)
    ) == [W1, W2, W3]
    w2 = row(team, W2)
    assert (w2.prs_opened, w2.prs_merged, w2.ai_prs_merged, w2.reverts) == (0, 0, 0, 0)
    assert w2.ai_share is None
    assert w2.cycle_time_median_hours is None


def test_members_get_rows_only_for_their_active_weeks_and_bots_get_none(team, history):
    counts = metrics.run(history)

    members = set(
        WeeklyMetric.objects.filter(team=team)
        .exclude(member_login="")
        .values_list("member_login", "week_start")
    )
    assert members == {("alice", W1), ("alice", W3), ("bob", W1), ("bob", W3)}
    assert counts["weeks"] == 3
    assert counts["member_weeks"] == 4

    alice = row(team, W1, "alice")
    assert (alice.prs_opened, alice.prs_merged, alice.ai_share) == (4, 2, 0.5)
    assert alice.cycle_time_median_hours == pytest.approx(19)
    assert alice.cycle_time_p75_hours == pytest.approx(23.5)
    assert alice.first_review_median_hours == pytest.approx(13)
    alice_w3 = row(team, W3, "alice")
    assert (alice_w3.prs_opened, alice_w3.prs_merged) == (0, 1)
    assert alice_w3.cycle_time_median_hours == pytest.approx(264)
    assert row(team, W3, "bob").reverts == 1


def test_the_stage_reports_weeks_computed_on_the_run(team, history):
    metrics.run(history)

    history.refresh_from_db()
    assert history.progress["weeks_computed"] == 3


def test_rerunning_replaces_rows_and_drops_weeks_that_no_longer_exist(team, history):
    metrics.run(history)
    first = {
        (m.week_start, m.member_login): m.cycle_time_median_hours
        for m in WeeklyMetric.objects.filter(team=team)
    }

    again = metrics.run(history)
    assert again["rows_deleted"] == 0
    assert {
        (m.week_start, m.member_login): m.cycle_time_median_hours
        for m in WeeklyMetric.objects.filter(team=team)
    } == first

    # The third week's PRs go away (e.g. their repository is no longer analysed) and #2 is now
    # AI-assisted: the third week's rows disappear and the first week's numbers change.
    PullRequest.objects.filter(team=team, number__in=[6, 7]).delete()
    AIVerdict.objects.filter(pull_request__team=team, pull_request__number=2).update(
        is_ai_assisted=True
    )
    metrics.run(history)

    assert list(
        WeeklyMetric.objects.filter(team=team, member_login="").values_list("week_start", flat=True)
    ) == [W1]
    assert not WeeklyMetric.objects.filter(team=team, week_start=W3).exists()
    assert row(team, W1).ai_prs_merged == 2
    assert row(team, W1).ai_share == 0.5


def test_only_the_runs_repositories_count(team, history, repositories):
    selected = list(history.repository_ids)
    history.repository_ids = [r.pk for r in repositories]
    metrics.run(history)
    # carol's PR in the third repository now counts: one more opened and merged in week one.
    assert row(team, W1).prs_opened == 7
    assert WeeklyMetric.objects.filter(team=team, member_login="carol").exists()

    history.repository_ids = selected
    metrics.run(history)
    assert row(team, W1).prs_opened == 6
    assert not WeeklyMetric.objects.filter(team=team, member_login="carol").exists()


def test_a_team_without_prs_gets_no_rows_and_the_stage_succeeds(team, repositories):
    run = make_run(team, repositories)

    assert metrics.run(run) == {"weeks": 0, "member_weeks": 0, "rows_deleted": 0}
    assert not WeeklyMetric.objects.filter(team=team).exists()
    run.refresh_from_db()
    assert run.progress["weeks_computed"] == 0


def test_another_teams_rows_are_left_alone(team, history):
    other = Team.objects.get(name="Other")
    WeeklyMetric.objects.create(team=other, week_start=W1, prs_opened=42)

    metrics.run(history)

    assert WeeklyMetric.objects.get(team=other, week_start=W1).prs_opened == 42


def test_weeks_are_utc_whatever_the_database_sessions_time_zone(team, history):
    # A connection with another TimeZone (a psql session, a pooled connection set up elsewhere)
    # must not move Sunday-night or Monday-midnight PRs into other weeks.
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'Pacific/Auckland'")
    try:
        metrics.run(history)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")

    assert row(team, W1).prs_opened == 6
    assert row(team, W3).prs_opened == 1
