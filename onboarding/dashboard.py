"""The dashboard's numbers and charts. Charts are SVG rendered here on the server: no CDN, no
JavaScript chart library, and they print and scale like text."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from onboarding.models import Team
from pipeline.models import AIVerdict, WeeklyMetric
from pipeline.scope import AI_SHARE_LABEL, Scope

WIDTH = 640
# The PRs-merged chart spans both columns of the dashboard.
WIDE_WIDTH = 1300
HEIGHT = 220
PAD_LEFT = 48
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 30
AI_COLOUR = "var(--chart-ai, #7c3aed)"
HUMAN_COLOUR = "var(--chart-human, #0ea5e9)"


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str


def team_weeks(team: Team, scope: Scope | None = None) -> list[WeeklyMetric]:
    """The team-level weekly rows (member rows have a member_login), oldest first, from the
    scope's first week on."""
    rows = WeeklyMetric.objects.filter(team=team, member_login="")
    if scope is not None:
        rows = rows.filter(run=scope.run, week_start__gte=scope.first_week)
    return list(rows.order_by("week_start"))


def headline_numbers(scope: Scope) -> dict:
    """What the top of the dashboard says in words: the scope's totals (``pipeline.scope``),
    the same counts the e-mail, the insights and the status JSON state."""
    totals = scope.frozen_totals()
    return {
        "prs_total": totals.prs,
        "prs_merged": totals.merged,
        "prs_ai_assisted_merged": totals.ai_merged,
        "ai_share_of_merged": totals.ai_share,
        "ai_share_percent": totals.ai_share_percent,
        "repositories": scope.repository_names(),
        "window_start": scope.start,
        "window_end": scope.end,
    }


def _nice_ceiling(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value))) / 10 if value >= 1 else 0.1
    while magnitude > value:
        magnitude /= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _week_label(week: datetime.date) -> str:
    return f"{week:%b} {week.day}"


def _frame(
    weeks: Sequence[datetime.date], y_max: float, unit: str, title: str, width: int
) -> tuple[list[str], float, float]:
    """Grid lines, axis labels and the x positions' slot width; returns (parts, plot_h, slot).

    ``width`` is the drawing's own width: a chart shown wider gets a wider drawing rather than
    a scaled-up one, so its text stays the size of the other charts' text."""
    plot_w = width - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    parts = [
        format_html(
            '<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}" '
            'preserveAspectRatio="xMidYMid meet">',
            width,
            HEIGHT,
            title,
        ),
        format_html("<title>{}</title>", title),
    ]
    for i in range(5):
        value = y_max * i / 4
        y = PAD_TOP + plot_h - plot_h * i / 4
        label = f"{value:.0f}{unit}" if y_max >= 4 or value == 0 else f"{value:.1f}{unit}"
        parts.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                PAD_LEFT,
                width - PAD_RIGHT,
                f"{y:.1f}",
                f"{y:.1f}",
                PAD_LEFT - 6,
                f"{y + 4:.1f}",
                label,
            )
        )
    slot = plot_w / max(len(weeks), 1)
    # At most one week label per ~80 units of width, so they never overlap.
    most = max(1, int(plot_w // 80))
    every = max(1, -(-len(weeks) // most))
    for i, week in enumerate(weeks):
        if i % every:
            continue
        parts.append(
            format_html(
                '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                f"{PAD_LEFT + slot * (i + 0.5):.1f}",
                HEIGHT - 10,
                _week_label(week),
            )
        )
    return parts, plot_h, slot


def _y(value: float, y_max: float, plot_h: float) -> float:
    return PAD_TOP + plot_h - plot_h * (value / y_max)


def bar_chart(
    weeks: Sequence[datetime.date],
    stacks: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    y_max: float | None = None,
    width: int = WIDTH,
) -> SafeString:
    """Stacked bars per week (one series per stack layer, bottom first)."""
    totals = [sum(s.values[i] or 0 for s in stacks) for i in range(len(weeks))]
    top = y_max or _nice_ceiling(max(totals, default=0))
    parts, plot_h, slot = _frame(weeks, top, unit, title, width)
    bar_w = min(48.0, max(2.0, slot * 0.7))
    for i, week in enumerate(weeks):
        base = 0.0
        x = PAD_LEFT + slot * i + (slot - bar_w) / 2
        for series in stacks:
            value = series.values[i] or 0
            if value <= 0:
                continue
            y_top = _y(base + value, top, plot_h)
            y_bottom = _y(base, top, plot_h)
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" rx="2" fill="{}">'
                    "<title>{}: {} {}{}</title></rect>",
                    f"{x:.1f}",
                    f"{y_top:.1f}",
                    f"{bar_w:.1f}",
                    f"{y_bottom - y_top:.1f}",
                    series.colour,
                    _week_label(week),
                    series.name,
                    f"{value:.0f}" if value >= 10 else f"{value:.1f}".rstrip("0").rstrip("."),
                    unit,
                )
            )
            base += value
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def line_chart(
    weeks: Sequence[datetime.date],
    lines: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    width: int = WIDTH,
) -> SafeString:
    """One line per series; weeks without a value break the line instead of faking a zero."""
    values = [v for s in lines for v in s.values if v is not None]
    top = _nice_ceiling(max(values, default=0))
    parts, plot_h, slot = _frame(weeks, top, unit, title, width)
    for series in lines:
        segment: list[str] = []
        segments: list[list[str]] = []
        for i, value in enumerate(series.values):
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            x = PAD_LEFT + slot * (i + 0.5)
            y = _y(value, top, plot_h)
            segment.append(f"{x:.1f},{y:.1f}")
            parts.append(
                format_html(
                    '<circle cx="{}" cy="{}" r="3" fill="{}"><title>{}: {} {}{}</title></circle>',
                    f"{x:.1f}",
                    f"{y:.1f}",
                    series.colour,
                    _week_label(weeks[i]),
                    series.name,
                    f"{value:.1f}",
                    unit,
                )
            )
        if segment:
            segments.append(segment)
        for points in segments:
            parts.append(
                format_html(
                    '<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5" '
                    'stroke-linejoin="round" stroke-linecap="round"/>',
                    " ".join(points),
                    series.colour,
                )
            )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(parts))


def charts(team: Team, scope: Scope | None = None) -> dict[str, SafeString] | None:
    """The three weekly charts, or None when there are no weekly metrics yet."""
    rows = team_weeks(team, scope)
    if not rows:
        return None
    weeks = [row.week_start for row in rows]
    share = [None if row.ai_share is None else row.ai_share * 100 for row in rows]
    return {
        "ai_share": bar_chart(
            weeks,
            [Series(AI_SHARE_LABEL, share, AI_COLOUR)],
            title=f"{AI_SHARE_LABEL} per week",
            unit="%",
            y_max=100,
        ),
        "cycle_time": line_chart(
            weeks,
            [
                Series("AI-assisted", [r.ai_cycle_time_median_hours for r in rows], AI_COLOUR),
                Series(
                    "Not AI-assisted", [r.human_cycle_time_median_hours for r in rows], HUMAN_COLOUR
                ),
            ],
            title="Median cycle time (hours), AI-assisted vs not",
            unit="h",
        ),
        "merged": bar_chart(
            weeks,
            [
                Series("AI-assisted", [r.ai_prs_merged for r in rows], AI_COLOUR),
                Series(
                    "Not AI-assisted",
                    [max(0, r.prs_merged - r.ai_prs_merged) for r in rows],
                    HUMAN_COLOUR,
                ),
            ],
            title="PRs merged per week",
            width=WIDE_WIDTH,
        ),
    }


def evidence_of(verdict: AIVerdict | None) -> list[str]:
    """What a user reads to see *why* a PR is (not) flagged: the markers found, or the LLM's
    reason."""
    if verdict is None:
        return []
    lines = []
    for hit in verdict.signature_hits or []:
        tool = hit.get("tool", "")
        evidence = hit.get("evidence") or hit.get("marker") or ""
        # A review bot's summary or review is shown as such: it never made the PR AI-assisted.
        if tool and hit.get("kind") == "review" and not evidence.startswith("reviewed by"):
            tool = f"{tool} (review only)"
        lines.append(f"{tool}: {evidence}" if tool else str(evidence))
    if verdict.llm_reason:
        confidence = (
            f" ({verdict.llm_confidence:.0%} confident)"
            if verdict.llm_confidence is not None
            else ""
        )
        lines.append(f"LLM{confidence}: {verdict.llm_reason}")
    # The same marker found in several commits reads once.
    return list(dict.fromkeys(lines))
