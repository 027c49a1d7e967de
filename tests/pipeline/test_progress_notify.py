"""Progress notifications coalesce (at most one per run per 100 ms, the newest numbers still
announced after commit), while status changes are never held back and nothing rolled back is
ever announced. A real LISTEN connection on the test database sees what a browser's stream
would; the coalescer's clock is moved by hand so the windows do not depend on machine speed."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from django.db import transaction

from pipeline import notify, progress, transitions
from pipeline.status import PipelineStatus
from tests.conftest import test_database_url as database_url


class HandClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hand_clock(monkeypatch) -> HandClock:
    clock = HandClock()
    monkeypatch.setattr(progress, "clock", clock)
    monkeypatch.setattr(progress, "_coalescer", progress._Coalescer())
    yield clock
    progress.flush_pending()


@pytest.fixture
def listener(transactional_db, empty_queue_after):
    conn = psycopg.connect(database_url(), autocommit=True)
    conn.execute(f"LISTEN {notify.CHANNEL}")

    class Listener:
        def events(self, within: float) -> list[dict]:
            """Everything announced until ``within`` seconds pass without a notification."""
            received = []
            for note in conn.notifies(timeout=within):
                received.append(json.loads(note.payload))
            return received

        def next(self, timeout: float = 10) -> dict:
            for note in conn.notifies(timeout=timeout, stop_after=1):
                return json.loads(note.payload)
            pytest.fail(f"no notification within {timeout}s")

    yield Listener()
    conn.close()


@pytest.fixture
def run(transactional_db, team, repositories):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    return run


def progress_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "progress"]


def test_a_burst_of_reports_is_announced_once_then_once_more_with_the_final_numbers(
    hand_clock, run, listener
):
    for page in range(1, 31):
        progress.report(run, prs_synced=page * 100)
        hand_clock.now += 0.002  # 30 pages within 60 ms: one window

    first = listener.next()
    assert first["event"] == "progress" and first["run"] == run.pk
    # Held back until the window ends, however long that takes on this machine.
    assert progress_events(listener.events(within=0.5)) == []

    hand_clock.now += progress.COALESCE_SECONDS
    trailing = listener.next()
    assert trailing["event"] == "progress" and trailing["run"] == run.pk
    assert progress_events(listener.events(within=0.5)) == []
    run.refresh_from_db()
    assert run.progress["prs_synced"] == 3000  # what the stream re-reads on that notification


def test_reports_far_apart_are_each_announced_at_once(hand_clock, run, listener):
    for synced in (10, 20, 30):
        progress.report(run, prs_synced=synced)
        assert listener.next()["event"] == "progress"
        hand_clock.now += progress.COALESCE_SECONDS

    assert progress_events(listener.events(within=0.3)) == []


def test_a_rolled_back_report_is_never_announced_and_does_not_hold_back_the_next(
    hand_clock, run, listener
):
    with pytest.raises(RuntimeError), transaction.atomic():
        progress.report(run, prs_synced=111)
        raise RuntimeError("the stage failed after reporting")
    assert listener.events(within=0.5) == []

    progress.report(run, prs_synced=222)  # same instant: the rolled-back one never counted

    assert listener.next()["event"] == "progress"


def test_a_held_back_report_that_rolls_back_is_not_announced_later(hand_clock, run, listener):
    progress.report(run, prs_synced=1)
    assert listener.next()["event"] == "progress"

    with pytest.raises(RuntimeError), transaction.atomic():
        progress.report(run, prs_synced=2)
        raise RuntimeError("rolled back inside the window")
    hand_clock.now += 10 * progress.COALESCE_SECONDS

    assert listener.events(within=0.5) == []


def test_a_status_change_right_after_a_report_is_announced_at_once(hand_clock, run, listener):
    attempt = run.attempts.get(stage=PipelineStatus.SYNCING)
    progress.report(run, prs_synced=5)
    assert listener.next()["event"] == "progress"

    transitions.complete_stage(attempt.pk, {"prs_synced": 5})  # same instant as the report

    changed = listener.next()
    assert changed["event"] == "stage_completed"
    assert changed["status"] == PipelineStatus.LLM_PROCESSING


def test_a_status_change_that_rolls_back_is_never_announced(hand_clock, run, listener):
    attempt = run.attempts.get(stage=PipelineStatus.SYNCING)
    with pytest.raises(RuntimeError), transaction.atomic():
        transitions.complete_stage(attempt.pk, {})
        raise RuntimeError("the hand-off failed after its NOTIFY")

    assert listener.events(within=0.5) == []


def test_the_trailing_announcement_uses_the_real_clock_by_default(run, listener):
    """Without a hand-moved clock the held-back numbers are announced within the window."""
    progress.report(run, prs_synced=1)
    progress.report(run, prs_synced=2)
    started = time.monotonic()
    events = progress_events([listener.next(), listener.next()])

    assert len(events) == 2
    assert time.monotonic() - started < 10
