"""One Postgres LISTEN per web process, fanned out to the live streams of that process.

- One dedicated autocommit ``psycopg.AsyncConnection`` (not Django's connection, not a pool)
  LISTENs on ``pipeline.notify.CHANNEL``; ``conn.notifies(timeout=...)`` rounds are separated by a
  ``SELECT 1`` probe so a dead connection is noticed even when nothing is published (the same
  loop shape as procrastinate's own listener).
- Each stream subscribes with its team id and gets its own ``asyncio.Queue``; a notification for
  team T wakes only T's subscribers. The queue holds at most one pending wake-up: every event
  leads to a full re-read, so several changes arriving together need one re-render, not several.
- NOTIFY is at-most-once: after the connection drops we back off, reconnect, LISTEN again and
  then wake every subscriber to re-send a full snapshot, so a change made during the gap is
  never lost (the snapshot is read after LISTEN is active again).
- Database reads for the streams (authorizing a stream, building a snapshot) run on one
  dedicated reader thread with its own Django connection, so a thousand open tabs cost one
  LISTEN connection and one reader connection, not a database backend each. A change for a team
  is read and rendered once and shared by all of that team's subscribers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from django.db import InterfaceError, OperationalError, connections
from psycopg import sql

from pipeline.notify import CHANNEL

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Shown in pg_stat_activity; tests and operators find the listening backend by it.
APPLICATION_NAME = "tformance live listener"
# How long one notifies() round waits before the liveness probe.
NOTIFIES_TIMEOUT_SECONDS = 30.0
RECONNECT_FIRST_DELAY_SECONDS = 0.2
RECONNECT_MAX_DELAY_SECONDS = 5.0

# Connection parameters of Django's that are not libpq/psycopg connect() arguments.
_NOT_CONNECT_ARGUMENTS = {"cursor_factory", "context"}


def listener_connect_kwargs() -> dict[str, Any]:
    """psycopg connect() arguments for the database Django uses (embedded socket or
    DATABASE_URL alike), taken from Django's own resolution of the settings."""
    params = connections["default"].get_connection_params()
    kwargs = {k: v for k, v in params.items() if k not in _NOT_CONNECT_ARGUMENTS}
    kwargs["application_name"] = APPLICATION_NAME
    return kwargs


@dataclass(eq=False)
class Subscription:
    team_id: int
    # Wake-ups: "change" (a NOTIFY for this team) or "resync" (the listener reconnected).
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=1))

    def wake(self, reason: str) -> None:
        try:
            self.queue.put_nowait(reason)
        except asyncio.QueueFull:
            pass  # a wake-up is already pending; it will read the newest state anyway


@dataclass(frozen=True)
class _SharedRead:
    version: int
    started: float  # loop.time()
    future: asyncio.Future


def _on_reader_thread(function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except (OperationalError, InterfaceError):
        # The reader's connection was closed under it (database restart, terminated backend):
        # drop it and try once more on a new one.
        logger.warning("live reader: database connection lost; reconnecting", exc_info=True)
        connections.close_all()
        return function(*args)


class Listener:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._subscribers: dict[int, set[Subscription]] = {}
        # Per-team change counter; a render started at version v has seen every change up to v.
        self._versions: dict[int, int] = {}
        self._renders: dict[int, _SharedRead] = {}
        self._listening = asyncio.Event()
        self._stopping = False
        self._connection: psycopg.AsyncConnection | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="live-reader"
        )
        self._task = loop.create_task(self._listen_forever(), name="live-listener")
        self.reconnects = 0

    # --- subscribers ---------------------------------------------------------------------
    def subscribe(self, team_id: int) -> Subscription:
        subscription = Subscription(team_id)
        self._subscribers.setdefault(team_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        team_subscribers = self._subscribers.get(subscription.team_id)
        if team_subscribers is None:
            return
        team_subscribers.discard(subscription)
        if not team_subscribers:
            del self._subscribers[subscription.team_id]
            self._versions.pop(subscription.team_id, None)
            self._renders.pop(subscription.team_id, None)

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def wait_listening(self, timeout: float) -> bool:
        """Wait until LISTEN is active, so a snapshot read afterwards misses no change."""
        try:
            await asyncio.wait_for(self._listening.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # --- reads -----------------------------------------------------------------------------
    async def run_read(self, function: Callable[..., T], *args: Any) -> T:
        """Run a synchronous database read on the reader thread."""
        return await self.loop.run_in_executor(self._reader, _on_reader_thread, function, *args)

    async def shared_read(
        self, team_id: int, function: Callable[[int], T], *, max_age: float | None = None
    ) -> T:
        """``function(team_id)`` read at least as late as the latest change seen for the team,
        shared by every subscriber of the team asking for the same version. ``max_age``
        (seconds) also refuses a result started longer ago than that, for periodic refreshes
        of what changes with time alone (elapsed time, a dead worker)."""
        version = self._versions.get(team_id, 0)
        pending = self._renders.get(team_id)
        if (
            pending is None
            or pending.version < version
            or (max_age is not None and self.loop.time() - pending.started > max_age)
        ):
            future = asyncio.ensure_future(self.run_read(function, team_id))
            pending = _SharedRead(version, self.loop.time(), future)
            self._renders[team_id] = pending
        # shield: one disconnecting subscriber must not cancel the read the others wait for.
        return await asyncio.shield(pending.future)

    # --- the LISTEN loop -------------------------------------------------------------------
    def _dispatch(self, payload: str) -> None:
        try:
            team_id = int(json.loads(payload)["team"])
        except (ValueError, KeyError, TypeError):
            logger.warning("live listener: ignoring malformed payload %r", payload[:200])
            return
        subscribers = self._subscribers.get(team_id)
        if not subscribers:
            return
        self._versions[team_id] = self._versions.get(team_id, 0) + 1
        for subscription in subscribers:
            subscription.wake("change")

    def _resync_everyone(self) -> None:
        # Renders started before this moment may have missed a change: forget them.
        self._renders.clear()
        for team_id, subscribers in self._subscribers.items():
            self._versions[team_id] = self._versions.get(team_id, 0) + 1
            for subscription in subscribers:
                subscription.wake("resync")

    async def _listen_forever(self) -> None:
        delay = RECONNECT_FIRST_DELAY_SECONDS
        connected_before = False
        while not self._stopping:
            try:
                async with await psycopg.AsyncConnection.connect(
                    **listener_connect_kwargs(), autocommit=True
                ) as conn:
                    self._connection = conn
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._listening.set()
                    delay = RECONNECT_FIRST_DELAY_SECONDS
                    if connected_before:
                        self.reconnects += 1
                        logger.info("live listener: listening again; resyncing every stream")
                        self._resync_everyone()
                    connected_before = True
                    while True:
                        async for notification in conn.notifies(timeout=NOTIFIES_TIMEOUT_SECONDS):
                            self._dispatch(notification.payload)
                        await conn.execute("SELECT 1")
            except psycopg.Error as exc:
                self._listening.clear()
                self._connection = None
                if self._stopping:
                    return
                logger.warning("live listener: %s; reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def stop(self) -> None:
        """Close the LISTEN connection and the reader's connection (e.g. before the test
        database is dropped), and wake the streams so they end."""
        self._stopping = True
        self._listening.clear()
        self._task.cancel()
        try:
            await self._task
        except (asyncio.CancelledError, psycopg.Error):
            pass
        await self.loop.run_in_executor(self._reader, connections.close_all)
        self._reader.shutdown(wait=True)
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.wake("stop")

    @property
    def stopped(self) -> bool:
        return self._stopping


_listener: Listener | None = None


def get_listener() -> Listener:
    """This process's listener, started on first use in the running event loop."""
    global _listener
    loop = asyncio.get_running_loop()
    if _listener is None or _listener.loop is not loop or _listener.stopped:
        _listener = Listener(loop)
    return _listener


async def stop_listener() -> None:
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        await listener.stop()
