"""The insight rules: plain functions from a team's facts (weekly rows and a few aggregates,
gathered by ``pipeline.stages.insights``) to insights a person can read.

Each rule returns one insight: a headline, a one-paragraph detail, a severity and the numbers
behind it. When the data cannot support a conclusion the rule says so ("sample too small")
rather than guessing. Trends compare the last ``PERIOD_WEEKS`` weeks with the ``PERIOD_WEEKS``
weeks before them, ending at the team's latest week with activity.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

PERIOD_WEEKS = 4
# Fewer merged PRs than this on either side and a cycle-time comparison is noise.
MIN_PRS_PER_SIDE = 10
# Fewer PRs than this in either period and a trend is noise.
MIN_PRS_PER_PERIOD = 5
# Changes smaller than these are called steady.
SHARE_CHANGE_POINTS = 5.0
RISING_RATIO = 1.25
FALLING_RATIO = 0.8
SAME_SPEED_BAND = 0.1

INFO, POSITIVE, WARNING = "info", "positive", "warning"


@dataclass
class Period:
    """Medians of one period and how many PRs they stand on."""

    reviewed: int = 0
    review_wait_median_hours: float | None = None
    merged: int = 0
    ai_merged: int = 0
    size_median: float | None = None


@dataclass
class TeamFacts:
    prs: int = 0
    weeks: int = 0
    last_week: datetime.date | None = None
    # Merged PRs, summed from the weekly rows.
    prs_merged: int = 0
    ai_prs_merged: int = 0
    # The cycle-time comparison: merged PRs on each side and their medians over the window.
    cycle_ai_prs: int = 0
    cycle_human_prs: int = 0
    ai_cycle_median_hours: float | None = None
    human_cycle_median_hours: float | None = None
    recent: Period = field(default_factory=Period)
    previous: Period = field(default_factory=Period)
    # [(tool, PRs)] most used first.
    tools: list[tuple[str, int]] = field(default_factory=list)
    ai_prs: int = 0


@dataclass
class Draft:
    kind: str
    headline: str
    detail: str
    severity: str
    numbers: dict
    # A rule that could not conclude (too little data) ranks after every conclusion.
    conclusive: bool = True


def hours(value: float) -> str:
    """Hours as people say them: '45 min', '6.5 h', '3.2 days'."""
    if value < 1:
        return f"{max(1, round(value * 60))} min"
    if value < 10:
        return f"{value:.1f} h"
    if value < 48:
        return f"{value:.0f} h"
    return f"{value / 24:.1f} days"


def percent(share: float) -> str:
    return f"{share * 100:.0f}%"


def lines(value: float) -> str:
    return f"{value:.0f} lines"


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def ai_adoption(facts: TeamFacts) -> Draft:
    if not facts.prs_merged:
        return Draft(
            "ai_adoption",
            "No merged PRs yet to measure AI adoption",
            "None of the analysed pull requests has been merged, so there is no share of "
            "AI-assisted work to report yet.",
            INFO,
            {"prs_merged": 0},
            conclusive=False,
        )
    share = facts.ai_prs_merged / facts.prs_merged
    recent = _share(facts.recent.ai_merged, facts.recent.merged)
    previous = _share(facts.previous.ai_merged, facts.previous.merged)
    numbers = {
        "ai_share": round(share, 4),
        "ai_prs_merged": facts.ai_prs_merged,
        "prs_merged": facts.prs_merged,
        "weeks": facts.weeks,
        "recent_share": None if recent is None else round(recent, 4),
        "previous_share": None if previous is None else round(previous, 4),
        "recent_merged": facts.recent.merged,
        "previous_merged": facts.previous.merged,
        "trend": "unknown",
    }
    headline = f"{percent(share)} of merged PRs were AI-assisted"
    detail = (
        f"{facts.ai_prs_merged} of the {facts.prs_merged} PRs merged over {facts.weeks} "
        f"week{'' if facts.weeks == 1 else 's'} "
        "show signs of an AI coding tool (commit trailers, bot authors, PR text or the "
        "classifier's verdict). "
    )
    severity = INFO
    if min(facts.recent.merged, facts.previous.merged) < MIN_PRS_PER_PERIOD:
        detail += (
            f"A trend needs at least {MIN_PRS_PER_PERIOD} merged PRs in each of the last two "
            f"{PERIOD_WEEKS}-week periods; the sample is too small to say whether adoption "
            "is changing."
        )
    else:
        change = (recent - previous) * 100
        if change >= SHARE_CHANGE_POINTS:
            numbers["trend"] = "rising"
            severity = POSITIVE
            headline += f", rising to {percent(recent)} lately"
            detail += (
                f"Adoption is rising: {percent(recent)} of PRs merged in the last {PERIOD_WEEKS} "
                f"weeks, up from {percent(previous)} in the {PERIOD_WEEKS} weeks before."
            )
        elif change <= -SHARE_CHANGE_POINTS:
            numbers["trend"] = "falling"
            headline += f", falling to {percent(recent)} lately"
            detail += (
                f"Adoption is falling: {percent(recent)} of PRs merged in the last "
                f"{PERIOD_WEEKS} weeks, down from {percent(previous)} in the {PERIOD_WEEKS} "
                "weeks before."
            )
        else:
            numbers["trend"] = "steady"
            detail += (
                f"Adoption is steady: {percent(recent)} in the last {PERIOD_WEEKS} weeks against "
                f"{percent(previous)} in the {PERIOD_WEEKS} weeks before."
            )
    return Draft("ai_adoption", headline, detail, severity, numbers)


def ai_cycle_time(facts: TeamFacts) -> Draft:
    numbers = {
        "ai_prs_merged": facts.cycle_ai_prs,
        "human_prs_merged": facts.cycle_human_prs,
        "min_prs_per_side": MIN_PRS_PER_SIDE,
        "ai_cycle_time_median_hours": facts.ai_cycle_median_hours,
        "human_cycle_time_median_hours": facts.human_cycle_median_hours,
    }
    if min(facts.cycle_ai_prs, facts.cycle_human_prs) < MIN_PRS_PER_SIDE:
        numbers["sample_too_small"] = True
        return Draft(
            "ai_cycle_time",
            "Too few PRs yet to compare AI-assisted and other cycle times",
            f"The sample is too small: a fair comparison needs at least {MIN_PRS_PER_SIDE} "
            f"merged PRs on each side, and so far {facts.cycle_ai_prs} AI-assisted and "
            f"{facts.cycle_human_prs} other PRs were merged. The comparison will appear once "
            "more PRs are merged.",
            INFO,
            numbers,
            conclusive=False,
        )
    ai, human = facts.ai_cycle_median_hours, facts.human_cycle_median_hours
    numbers["sample_too_small"] = False
    sides = (
        f"Median time from opening to merge: {hours(ai)} for {facts.cycle_ai_prs} "
        f"AI-assisted PRs, {hours(human)} for {facts.cycle_human_prs} other PRs."
    )
    if human > 0 and ai < human * (1 - SAME_SPEED_BAND):
        faster = 1 - ai / human
        numbers["difference"] = round(-faster, 4)
        return Draft(
            "ai_cycle_time",
            f"AI-assisted PRs merge {percent(faster)} faster",
            f"{sides} Faster merges can also mean smaller or simpler changes; check the Size "
            "column of the pull-request table before crediting the tools.",
            POSITIVE,
            numbers,
        )
    if ai > human * (1 + SAME_SPEED_BAND):
        slower = ai / human - 1 if human > 0 else None
        numbers["difference"] = None if slower is None else round(slower, 4)
        headline = (
            f"AI-assisted PRs take {percent(slower)} longer to merge"
            if slower is not None
            else "AI-assisted PRs take longer to merge"
        )
        return Draft(
            "ai_cycle_time",
            headline,
            f"{sides} Longer cycles often come from extra review rounds on generated code; "
            "the Review rounds column of the pull-request table shows which PRs went back "
            "and forth.",
            WARNING,
            numbers,
        )
    numbers["difference"] = round(ai / human - 1, 4) if human > 0 else 0.0
    return Draft(
        "ai_cycle_time",
        "AI-assisted and other PRs merge in about the same time",
        f"{sides} The difference is within {percent(SAME_SPEED_BAND)}.",
        INFO,
        numbers,
    )


def _trend(
    kind: str,
    what: str,
    recent_value: float | None,
    previous_value: float | None,
    recent_count: int,
    previous_count: int,
    fmt: Callable[[float], str],
    *,
    rising: tuple[str, str],
    falling: tuple[str, str],
    steady: str,
) -> Draft:
    """A "last period against the one before" rule; ``rising``/``falling`` are (headline,
    severity) and rising is the direction that deserves attention."""
    numbers = {
        "recent": recent_value,
        "previous": previous_value,
        "recent_prs": recent_count,
        "previous_prs": previous_count,
        "period_weeks": PERIOD_WEEKS,
        "min_prs_per_period": MIN_PRS_PER_PERIOD,
    }
    if min(recent_count, previous_count) < MIN_PRS_PER_PERIOD:
        numbers["sample_too_small"] = True
        return Draft(
            kind,
            f"Not enough PRs yet to see a trend in {what}",
            f"The sample is too small: a trend needs at least {MIN_PRS_PER_PERIOD} PRs in each "
            f"of the last two {PERIOD_WEEKS}-week periods, and there are {recent_count} in the "
            f"last {PERIOD_WEEKS} weeks and {previous_count} in the {PERIOD_WEEKS} weeks before.",
            INFO,
            numbers,
            conclusive=False,
        )
    numbers["sample_too_small"] = False
    compared = (
        f"Median {what}: {fmt(recent_value)} over {recent_count} PRs in the last {PERIOD_WEEKS} "
        f"weeks, against {fmt(previous_value)} over {previous_count} PRs in the "
        f"{PERIOD_WEEKS} weeks before."
    )
    ratio = recent_value / previous_value if previous_value else None
    numbers["ratio"] = None if ratio is None else round(ratio, 4)
    if (ratio is None and recent_value > 0) or (ratio is not None and ratio >= RISING_RATIO):
        headline, severity = rising
        numbers["trend"] = "rising"
    elif ratio is not None and ratio <= FALLING_RATIO:
        headline, severity = falling
        numbers["trend"] = "falling"
    else:
        headline, severity = steady, INFO
        numbers["trend"] = "steady"
    return Draft(kind, f"{headline} ({fmt(recent_value)})", compared, severity, numbers)


def review_bottleneck(facts: TeamFacts) -> Draft:
    draft = _trend(
        "review_bottleneck",
        "time to first review",
        facts.recent.review_wait_median_hours,
        facts.previous.review_wait_median_hours,
        facts.recent.reviewed,
        facts.previous.reviewed,
        hours,
        rising=("Time to first review is rising", WARNING),
        falling=("Reviews start sooner", POSITIVE),
        steady="Time to first review is steady",
    )
    if draft.numbers.get("trend") == "rising":
        draft.detail += " PRs wait longer for a first look: a review bottleneck may be forming."
    return draft


def pr_size_trend(facts: TeamFacts) -> Draft:
    draft = _trend(
        "pr_size_trend",
        "PR size",
        facts.recent.size_median,
        facts.previous.size_median,
        facts.recent.merged,
        facts.previous.merged,
        lines,
        rising=("PRs are getting bigger", WARNING),
        falling=("PRs are getting smaller", POSITIVE),
        steady="PR size is steady",
    )
    draft.detail += " Size is lines added plus lines deleted, measured on merged PRs."
    return draft


def top_tools(facts: TeamFacts) -> Draft:
    if not facts.tools:
        return Draft(
            "top_tools",
            "No AI tool identified",
            "None of the analysed PRs names an AI coding tool in its commits, authors or text.",
            INFO,
            {"tools": [], "ai_prs": facts.ai_prs},
            conclusive=False,
        )
    (leader, leader_prs), *others = facts.tools
    listed = ", ".join(f"{tool} ({prs} PRs)" for tool, prs in facts.tools)
    detail = f"Tools seen in AI-assisted PRs, most used first: {listed}."
    if facts.ai_prs:
        detail += f" {leader} appears in {percent(leader_prs / facts.ai_prs)} of them."
    return Draft(
        "top_tools",
        f"{leader} is the most used AI tool ({leader_prs} PRs)",
        detail,
        INFO,
        {"tools": [{"tool": t, "prs": n} for t, n in facts.tools], "ai_prs": facts.ai_prs},
    )


RULES = (ai_adoption, ai_cycle_time, review_bottleneck, pr_size_trend, top_tools)
SEVERITY_RANK = {WARNING: 0, POSITIVE: 1, INFO: 2}


def build_insights(facts: TeamFacts) -> list[Draft]:
    """Every rule's insight, most important first: warnings, then good news, then the rest;
    inconclusive ones last. Ties keep the rule order (adoption first)."""
    if not facts.prs:
        return [
            Draft(
                "no_data",
                "No pull requests to analyse yet",
                "The selected repositories have no pull requests in the synced window. Select "
                "more repositories, or come back once the team has opened some.",
                INFO,
                {"prs": 0},
                conclusive=False,
            )
        ]
    drafts = [rule(facts) for rule in RULES]
    order = {id(d): i for i, d in enumerate(drafts)}
    return sorted(drafts, key=lambda d: (not d.conclusive, SEVERITY_RANK[d.severity], order[id(d)]))
