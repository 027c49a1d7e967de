"""``manage.py pipeline status --watch``: a live terminal view of the running pipelines.

Driven by LISTEN on the status channel (``pipeline.notify.CHANNEL``, the same NOTIFYs the
progress page gets), on a dedicated autocommit connection: the screen is redrawn after a change,
at most ``REDRAW_INTERVAL`` apart (progress notices come up to ten a second per run), and at
least every ``IDLE_REDRAW`` seconds so ages and queue times stay current even when nothing
moves. Rows are read with Django's connection, which stays outside any transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import psycopg
from django.db import connection
from django.utils import timezone
from psycopg import sql

from onboarding.listener import listener_connect_kwargs
from pipeline.models import PipelineRun
from pipeline.notify import CHANNEL
from pipeline.status import PipelineStatus

REDRAW_INTERVAL = 0.2
IDLE_REDRAW = 5.0
CLEAR = "\x1b[H\x1b[2J"
COUNTERS = ("repositories_done", "repositories_total", "prs_synced", "prs_analysed")


def running_lines(team_id: int | None = None) -> list[str]:
    runs = PipelineRun.objects.filter(state=PipelineRun.State.RUNNING).select_related("team")
    if team_id is not None:
        runs = runs.filter(team_id=team_id)
    now = timezone.now()
    lines = [f"{timezone.localtime(now):%Y-%m-%d %H:%M:%S %Z}  running pipelines: {len(runs)}"]
    for run in runs.order_by("started_at"):
        progress = run.progress or {}
        counters = " ".join(f"{key}={progress[key]}" for key in COUNTERS if key in progress)
        elapsed = (now - run.started_at).total_seconds()
        lines.append(
            f"  team {run.team_id} {run.team.name!r:<24} {run.kind:<10} "
            f"{PipelineStatus(run.stage).label:<28} {elapsed:7.0f}s  {counters}"
        )
    connection.close()  # no connection held between redraws (long watches, DB restarts)
    return lines


def watch(
    write: Callable[[str], None],
    *,
    team_id: int | None = None,
    clear: bool = True,
    max_redraws: int | None = None,
) -> None:
    """Redraw on every change until interrupted (or after ``max_redraws`` redraws)."""
    redraws = 0
    with psycopg.connect(**listener_connect_kwargs(), autocommit=True) as listen:
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        while max_redraws is None or redraws < max_redraws:
            lines = running_lines(team_id)
            write((CLEAR if clear else "") + "\n".join(lines) + ("\n" if not clear else ""))
            redraws += 1
            drawn = time.monotonic()
            # Wait for a change (or the idle redraw), then let a burst settle.
            for _ in listen.notifies(timeout=IDLE_REDRAW, stop_after=1):
                pass
            pause = REDRAW_INTERVAL - (time.monotonic() - drawn)
            if pause > 0:
                time.sleep(pause)
            for _ in listen.notifies(timeout=0.001):
                pass  # drop what the pause collected: the next read shows it all
