"""One Postgres LISTEN per web process, fanned out to the live streams of that process.

- One dedicated autocommit ``psycopg.AsyncConnection`` (not Django's connection, not a pool)
  LISTENs on ``pipeline.notify.CHANNEL``; ``conn.notifies(timeout=...)`` rounds are separated by a
  ``SELECT 1`` probe so a dead connection is noticed even when nothing is published (the same
  loop shape as procrastinate's own listener).
- Each stream subscribes with its team id and gets its own mailbox (``Subscription``); a
  notification for team T concerns only T's subscribers. T's state is then read and rendered
  once, on the reader thread, and the result is put in each of T's mailboxes (fan-out costs a
  put per stream, not a database read). Notifications arriving during a read fold into one more
  read; a mailbox holds only the newest result, so a slow stream skips states instead of falling
  behind.
- NOTIFY is at-most-once: after the connection drops we back off, reconnect, LISTEN again and
  then wake every subscriber to re-send a full snapshot, so a change made during the gap is
  never lost (the snapshot is read after LISTEN is active again).
- Database reads for the streams (authorizing a stream, building a snapshot) run on one
  dedicated reader thread with its own Django connection, so a thousand open tabs cost one
  LISTEN connection and one reader connection, not a database backend each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from django.conf import settings
from django.db import InterfaceError, OperationalError, connections
from psycopg import sql

from pipeline.notify import CHANNEL

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Shown in pg_stat_activity; tests and operators find the listening backend by it.
APPLICATION_NAME = "tformance live listener"
# How long one notifies() round waits before the liveness probe.
NOTIFIES_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
PROBE_TIMEOUT_SECONDS = 10.0
RECONNECT_FIRST_DELAY_SECONDS = 0.2
RECONNECT_MAX_DELAY_SECONDS = 5.0
# Idle streams get a keepalive comment this often (settings.LIVE_KEEPALIVE_SECONDS overrides),
# and every watched team is re-read as often: elapsed times move and a worker can die without
# any NOTIFY. Streams send such a refresh only when it differs from what they showed.
KEEPALIVE_SECONDS = 15.0
# The ticks and refresh reads of one interval are spread over this many slices of it (each
# stream and each team in one slice), not sent to every stream at once: 5,000 idle streams
# ticked together wrote 5,000 comments in one burst, and a change arriving then waited behind
# them (bench/live's p95 at 5,000 clients doubled in runs where a tick fell inside).
TICK_SLICES = 15
# A team's periodic refresh goes to this many of its streams per turn of the event loop, one
# turn every gap (5,000 streams: 25 turns over a quarter of a second).
REFRESH_CHUNK = 200
REFRESH_CHUNK_GAP_SECONDS = 0.01

# Connection parameters of Django's that are not libpq/psycopg connect() arguments.
_NOT_CONNECT_ARGUMENTS = {"cursor_factory", "context"}


def listener_connect_kwargs() -> dict[str, Any]:
    """psycopg connect() arguments for the database Django uses (embedded socket or
    DATABASE_URL alike), taken from Django's own resolution of the settings."""
    params = connections["default"].get_connection_params()
    kwargs = {k: v for k, v in params.items() if k not in _NOT_CONNECT_ARGUMENTS}
    kwargs["application_name"] = APPLICATION_NAME
    return kwargs


@dataclass(frozen=True)
class Delivery:
    """A team's state, read and rendered once, on its way to each of the team's streams."""

    # Reads run one at a time, in submission order, on the reader thread: a higher sequence
    # number was read later, so it is at least as fresh.
    sequence: int
    # "change" (a NOTIFY for the team), "resync" (the listener reconnected: must be sent),
    # "refresh" (periodic: worth sending only if it differs from what the stream last sent).
    reason: str
    result: Any


# The subscription key of streams that follow every team (team ids start at 1).
ALL_TEAMS = 0
ALL_TEAMS_MIN_INTERVAL = 0.5

# Put in idle streams' queues every keepalive interval: "send a keepalive comment".
TICK = Delivery(sequence=0, reason="tick", result=None)


def _deliver_all(subscriptions: list[Subscription], delivery: Delivery) -> None:
    for subscription in subscriptions:
        subscription.deliver(delivery)


def keepalive_seconds() -> float:
    return float(getattr(settings, "LIVE_KEEPALIVE_SECONDS", KEEPALIVE_SECONDS))


_EMPTY: Any = object()


@dataclass(eq=False)
class Subscription:
    """One stream's mailbox: it holds at most the newest delivery, so a slow stream skips
    states, never falls behind. (Not an ``asyncio.Queue``: a change to a team is put in every
    one of its streams' mailboxes, 5,000 of them for one team in bench/live, and the queue's
    bookkeeping was a quarter of that fan-out's time.)"""

    team_id: int
    # Which slice of the keepalive interval ticks this stream (``TICK_SLICES``).
    slot: int = 0
    _item: Any = _EMPTY
    _waiter: asyncio.Future | None = None

    def deliver(self, delivery: Delivery | None) -> None:
        current = self._item
        if current is None:
            return  # the listener stopped: that stays the last word
        if delivery is not None and current is not _EMPTY and current.sequence > delivery.sequence:
            return  # a newer read is already waiting (a refresh handed out late, below)
        self._item = delivery  # an older delivery or a tick still unread is superseded
        self._wake()

    def tick(self) -> None:
        # A stream with something to send needs no keepalive.
        if self._item is _EMPTY:
            self._item = TICK
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Delivery | None:
        """The newest delivery (None: the listener stopped), waiting for one if need be."""
        while self._item is _EMPTY:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item, self._item = self._item, _EMPTY
        return item


@dataclass
class _TeamReads:
    in_flight: bool = False
    # Why to read once more when the read in flight finishes (a change arrived meanwhile).
    again: str | None = None
    last_started: float = float("-inf")


@dataclass(eq=False)
class _SharedSnapshot:
    """One snapshot read of a team, shared by the streams that asked before it started."""

    sequence: int
    future: asyncio.Future | None = None
    started: bool = False
    # Taken by the reader thread to mark the start and by the loop to decide joining: a stream
    # never joins a read that began before it subscribed.
    lock: threading.Lock = field(default_factory=threading.Lock)


# Stronger reasons win when several requests fold into one read.
_REASON_RANK = {"refresh": 0, "change": 1, "resync": 2}


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
    """``read_team(team_id)`` is the synchronous read-and-render each stream shows; it runs on
    the reader thread once per change of a team, whatever the number of its streams."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_team: Callable[[int], Any]) -> None:
        self.loop = loop
        self.read_team = read_team
        self._subscribers: dict[int, set[Subscription]] = {}
        self._slots = itertools.count()
        self._team_reads: dict[int, _TeamReads] = {}
        self._pending_snapshots: dict[int, _SharedSnapshot] = {}
        self._shared_reads: dict[Any, tuple[float, asyncio.Future]] = {}
        self._sequence = 0
        # Keys with a reader of their own (the operations page's ALL_TEAMS).
        self._key_readers: dict[int, Callable[[int], Any]] = {}
        self._all_teams_timer: asyncio.TimerHandle | None = None
        self._listening = asyncio.Event()
        self._stopping = False
        self._connection: psycopg.AsyncConnection | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="live-reader"
        )
        self._task = loop.create_task(self._listen_forever(), name="live-listener")
        self._ticker = loop.create_task(self._tick_forever(), name="live-keepalive")
        self.reconnects = 0

    # --- subscribers ---------------------------------------------------------------------
    def subscribe(self, team_id: int, read: Callable[[int], Any] | None = None) -> Subscription:
        """Follow ``team_id`` (or ``ALL_TEAMS``: every status change of any team, read with
        ``read`` at most once per ``ALL_TEAMS_MIN_INTERVAL``; progress counters excluded)."""
        if read is not None:
            self._key_readers[team_id] = read
        subscription = Subscription(team_id, slot=next(self._slots) % TICK_SLICES)
        self._subscribers.setdefault(team_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        team_subscribers = self._subscribers.get(subscription.team_id)
        if team_subscribers is None:
            return
        team_subscribers.discard(subscription)
        if not team_subscribers:
            del self._subscribers[subscription.team_id]

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def wait_listening(self, timeout: float) -> bool:
        """Wait until LISTEN is active, so a snapshot read afterwards misses no change."""
        try:
            async with asyncio.timeout(timeout):
                await self._listening.wait()
        except TimeoutError:
            return False
        return True

    # --- reads -----------------------------------------------------------------------------
    def _next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    async def run_read(self, function: Callable[..., T], *args: Any) -> T:
        """Run a synchronous database read on the reader thread."""
        return await self.loop.run_in_executor(self._reader, _on_reader_thread, function, *args)

    async def shared_read(
        self, key: Any, max_age: float, function: Callable[..., T], *args: Any
    ) -> T:
        """``function(*args)`` on the reader thread, one read shared by every caller asking for
        ``key`` within ``max_age`` seconds of its start (a failed read is not shared): e.g. a
        team's members, re-checked by all of its open streams with one query."""
        now = self.loop.time()
        last = self._shared_reads.get(key)
        if (
            last is None
            or now - last[0] >= max_age
            or (last[1].done() and last[1].exception() is not None)
        ):
            last = (now, asyncio.ensure_future(self.run_read(function, *args)))
            self._shared_reads[key] = last
        return await asyncio.shield(last[1])

    async def snapshot(self, team_id: int) -> Delivery:
        """A fresh read of ``team_id`` for a new stream (its first event).

        Streams of one team opening together (a reconnect storm after a deploy: every tab at
        once) share one read: a stream joins a snapshot read that is queued but has not
        started, since such a read begins after the stream subscribed and so sees every change
        committed before it (later ones reach the subscription by NOTIFY). A read that already
        started is never joined. Without this, 1,000 tabs of one team were 1,000 identical
        reads and renders in a row on the reader thread."""
        shared = self._pending_snapshots.get(team_id)
        if shared is not None:
            with shared.lock:
                joinable = not shared.started
            if joinable:
                return Delivery(shared.sequence, "snapshot", await asyncio.shield(shared.future))
        shared = _SharedSnapshot(sequence=self._next_sequence())
        self._pending_snapshots[team_id] = shared

        def read() -> Any:
            with shared.lock:
                shared.started = True
            return _on_reader_thread(self._read_for(team_id), team_id)

        shared.future = self.loop.run_in_executor(self._reader, read)
        try:
            result = await asyncio.shield(shared.future)
        finally:
            if self._pending_snapshots.get(team_id) is shared:
                del self._pending_snapshots[team_id]
        return Delivery(shared.sequence, "snapshot", result)

    def _read_for(self, key: int) -> Callable[[int], Any]:
        return self._key_readers.get(key, self.read_team)

    def request_read(self, team_id: int, reason: str, *, unless_younger_than: float = 0) -> None:
        """Read ``team_id`` again and deliver it to all of its streams. Requests arriving while
        a read is in flight fold into one more read after it."""
        if team_id not in self._subscribers or self._stopping:
            return
        reads = self._team_reads.setdefault(team_id, _TeamReads())
        if unless_younger_than and self.loop.time() - reads.last_started < unless_younger_than:
            return
        if reads.in_flight:
            if reads.again is None or _REASON_RANK[reason] > _REASON_RANK[reads.again]:
                reads.again = reason
            return
        reads.in_flight = True
        reads.last_started = self.loop.time()
        sequence = self._next_sequence()
        # Submitted right away, so reads run in the order of their sequence numbers.
        future = self.loop.run_in_executor(
            self._reader, _on_reader_thread, self._read_for(team_id), team_id
        )
        future.add_done_callback(functools.partial(self._deliver, team_id, reason, sequence))

    def _deliver(self, team_id: int, reason: str, sequence: int, future: asyncio.Future) -> None:
        reads = self._team_reads[team_id]
        reads.in_flight = False
        if future.cancelled():
            return
        if future.exception() is not None:
            logger.error(
                "live reader: reading team %s failed; trying again",
                team_id,
                exc_info=future.exception(),
            )
            if not self._stopping:
                self.loop.call_later(1.0, self.request_read, team_id, "resync")
            return
        delivery = Delivery(sequence, reason, future.result())
        subscribers = list(self._subscribers.get(team_id, ()))
        if reason == "refresh":
            # Periodic, so it may reach streams a little later: handed out in chunks, each
            # its own turn of the event loop, so that a change arriving meanwhile waits for
            # one chunk's writes, not for all of the team's streams (5,000 in bench/live).
            for index, start in enumerate(range(0, len(subscribers), REFRESH_CHUNK)):
                chunk = subscribers[start : start + REFRESH_CHUNK]
                self.loop.call_later(
                    index * REFRESH_CHUNK_GAP_SECONDS, _deliver_all, chunk, delivery
                )
        else:
            _deliver_all(subscribers, delivery)
        again, reads.again = reads.again, None
        if again is not None:
            self.request_read(team_id, again)
        elif team_id not in self._subscribers:
            self._team_reads.pop(team_id, None)

    # --- the LISTEN loop -------------------------------------------------------------------
    def _dispatch(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            team_id = int(message["team"])
        except (ValueError, KeyError, TypeError):
            logger.warning("live listener: ignoring malformed payload %r", payload[:200])
            return
        self.request_read(team_id, "change")
        if ALL_TEAMS in self._subscribers and message.get("event") != "progress":
            self._request_all_teams_read()

    def _request_all_teams_read(self) -> None:
        """At most one ALL_TEAMS read per interval, and always one after the last change: the
        operations page's aggregate read shares the reader thread with every progress stream."""
        if self._all_teams_timer is not None:
            return  # a read is already due
        reads = self._team_reads.get(ALL_TEAMS)
        wait = ALL_TEAMS_MIN_INTERVAL - (self.loop.time() - reads.last_started) if reads else 0
        if wait <= 0:
            self.request_read(ALL_TEAMS, "change")
            return

        def due() -> None:
            self._all_teams_timer = None
            self.request_read(ALL_TEAMS, "change")

        self._all_teams_timer = self.loop.call_later(wait, due)

    def _resync_everyone(self) -> None:
        for team_id in list(self._subscribers):
            self.request_read(team_id, "resync")

    async def _tick_forever(self) -> None:
        # One timer for all streams rather than a timeout per stream per event. Each stream
        # and each team comes up once per interval, in its own slice of it.
        current = 0
        while not self._stopping:
            interval = keepalive_seconds()
            await asyncio.sleep(interval / TICK_SLICES)
            current = (current + 1) % TICK_SLICES
            for team_id, subscribers in list(self._subscribers.items()):
                for subscription in subscribers:
                    if subscription.slot == current:
                        subscription.tick()
                if team_id % TICK_SLICES == current:
                    self.request_read(team_id, "refresh", unless_younger_than=interval / 2)

    async def _listen_forever(self) -> None:
        delay = RECONNECT_FIRST_DELAY_SECONDS
        connected_before = False
        while not self._stopping:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                    conn = await psycopg.AsyncConnection.connect(
                        **listener_connect_kwargs(), autocommit=True
                    )
                async with conn:
                    self._connection = conn
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self._listening.set()
                    delay = RECONNECT_FIRST_DELAY_SECONDS
                    if connected_before:
                        self.reconnects += 1
                        logger.info("live listener: listening again; resyncing every stream")
                    connected_before = True
                    # Streams that read their snapshot before this LISTEN (or during a gap)
                    # may have missed a change: send them all a fresh read.
                    self._resync_everyone()
                    while True:
                        async for notification in conn.notifies(timeout=NOTIFIES_TIMEOUT_SECONDS):
                            self._dispatch(notification.payload)
                        # A connection that died without a word (no RST) would otherwise
                        # wait forever: the probe must answer in time.
                        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                            await conn.execute("SELECT 1")
            except Exception as exc:
                # Any failure (psycopg's OperationalError, a probe timeout, a bug) ends in a
                # reconnect, never in a dead listener that silently stops every stream.
                self._listening.clear()
                self._connection = None
                if self._stopping:
                    return
                logger.warning(
                    "live listener: %s; reconnecting in %.1fs",
                    exc or type(exc).__name__,
                    delay,
                    exc_info=not isinstance(exc, psycopg.Error | TimeoutError),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def stop(self) -> None:
        """Close the LISTEN connection and the reader's connection (e.g. before the test
        database is dropped), and wake the streams so they end."""
        self._stopping = True
        self._listening.clear()
        if self._all_teams_timer is not None:
            self._all_teams_timer.cancel()
        self._ticker.cancel()
        self._task.cancel()
        for task in (self._ticker, self._task):
            try:
                await task
            except (asyncio.CancelledError, psycopg.Error):
                pass
        await self.loop.run_in_executor(self._reader, connections.close_all)
        self._reader.shutdown(wait=True)
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.deliver(None)

    @property
    def stopped(self) -> bool:
        return self._stopping


_listener: Listener | None = None


def get_listener(read_team: Callable[[int], Any]) -> Listener:
    """This process's listener, started on first use in the running event loop."""
    global _listener
    loop = asyncio.get_running_loop()
    if _listener is None or _listener.loop is not loop or _listener.stopped:
        _listener = Listener(loop, read_team)
    return _listener


async def stop_listener() -> None:
    global _listener
    if _listener is not None:
        listener, _listener = _listener, None
        await listener.stop()
