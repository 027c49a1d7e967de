"""Live counters of a running stage (repositories synced, PRs analysed, ...).

Counters are merged into ``PipelineRun.progress`` and announced on the status channel in one
transaction, so the progress page never shows a number that was rolled back. Stages call this
as they go (page by page), not only at the end, which makes it the place where a stage body
checks that its execution should go on (``pipeline.execution.checkpoint``).

Progress notifications coalesce: at most one per run per ``COALESCE_SECONDS``. Every
transaction that sends NOTIFY takes a global lock at commit (see bench/README.md, "NOTIFY at
scale"), and a sync can report hundreds of pages a minute. The counters are always written; only
the announcement is folded:

- leading edge: a report outside the window notifies inside its own transaction (delivered on
  commit, never after a rollback);
- trailing edge: a report inside the window schedules one notification for the window's end,
  *after its commit* (``on_commit``), sent by a small background thread on its own autocommit
  connection. The payload carries ids only and the stream re-reads the committed row, so a late
  announcement can only show committed numbers, the newest ones.
- The window is counted from notifications that were committed: a rolled-back report neither
  reaches the browser nor delays the next one.

The state is per process, which is enough: one run's stage runs in one job (one process) at a
time. Status changes (``pipeline.transitions``) never coalesce: each is its own NOTIFY.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import psycopg
from django.db import connection, connections, transaction

from pipeline import execution, notify
from pipeline.models import PipelineRun

logger = logging.getLogger(__name__)

COALESCE_SECONDS = 0.1
# Where the coalescer reads the time; tests replace it with a clock they move by hand.
clock = time.monotonic
_POLL_SECONDS = 0.02


def report(run: PipelineRun, **counters: int | str) -> None:
    """Merge ``counters`` into the run's progress and notify the progress page (coalesced).
    Raises execution.HandBack / Superseded when this execution should stop."""
    execution.checkpoint()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE pipeline_pipelinerun SET progress = progress || %s::jsonb"
                " WHERE id = %s RETURNING stage",
                [json.dumps(counters), run.pk],
            )
            (stage,) = cursor.fetchone()
        payload = {"team_id": run.team_id, "run_id": run.pk, "status": stage}
        if _coalescer.due(run.pk):
            notify.publish(**payload, event="progress")
            transaction.on_commit(lambda: _coalescer.sent(run.pk))
        else:
            transaction.on_commit(lambda: _coalescer.defer(run.pk, payload))
    run.progress = {**(run.progress or {}), **counters}


def flush_pending() -> None:
    """Send every deferred progress notification now (tests, and a worker shutting down)."""
    _coalescer.flush(force=True)


class _Coalescer:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._last_sent: dict[int, float] = {}
        self._pending: dict[int, dict] = {}
        self._thread: threading.Thread | None = None

    def due(self, run_id: int) -> bool:
        with self._lock:
            if run_id in self._pending:
                return False  # a trailing notification is already on its way
            last = self._last_sent.get(run_id)
            return last is None or clock() - last >= COALESCE_SECONDS

    def sent(self, run_id: int) -> None:
        with self._lock:
            self._last_sent[run_id] = clock()
            if len(self._last_sent) > 10_000:  # runs come and go: keep only recent ones
                horizon = clock() - 60
                self._last_sent = {k: v for k, v in self._last_sent.items() if v > horizon}

    def defer(self, run_id: int, payload: dict) -> None:
        with self._lock:
            self._pending[run_id] = payload
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="progress-notify", daemon=True
                )
                self._thread.start()
            self._lock.notify_all()

    def _take_due(self, *, force: bool) -> list[tuple[int, dict]]:
        now = clock()
        with self._lock:
            ready = [
                (run_id, payload)
                for run_id, payload in self._pending.items()
                if force or now - self._last_sent.get(run_id, -COALESCE_SECONDS) >= COALESCE_SECONDS
            ]
            for run_id, _ in ready:
                del self._pending[run_id]
                self._last_sent[run_id] = now
            return ready

    def flush(self, *, force: bool = False) -> bool:
        """Send what is due; True when nothing is left pending."""
        ready = self._take_due(force=force)
        if ready:
            try:
                with psycopg.connect(**_connect_kwargs(), autocommit=True) as conn:
                    for _, payload in ready:
                        body = {
                            "team": payload["team_id"],
                            "run": payload["run_id"],
                            "status": payload["status"],
                            "event": "progress",
                        }
                        conn.execute("SELECT pg_notify(%s, %s)", [notify.CHANNEL, json.dumps(body)])
            except psycopg.Error:
                # The database is away: the counters are committed, and the next report or
                # status change (or the stream's periodic refresh) shows them.
                logger.warning("could not send %d progress notifications", len(ready))
        with self._lock:
            return not self._pending

    def _run(self) -> None:
        while True:
            if self.flush():
                with self._lock:
                    self._lock.wait(timeout=1.0)
                    if not self._pending:
                        self._thread = None
                        return
            else:
                time.sleep(_POLL_SECONDS)


def _connect_kwargs() -> dict:
    params = connections["default"].get_connection_params()
    kwargs = {k: v for k, v in params.items() if k not in {"cursor_factory", "context"}}
    kwargs["application_name"] = "tformance progress notify"
    return kwargs


_coalescer = _Coalescer()
