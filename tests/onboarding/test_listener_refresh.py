"""A team's periodic refresh is handed to its streams in chunks, one turn of the event loop
each, so a change that arrives meanwhile is not held up behind thousands of writes; and a
refresh chunk handed out after a newer change never replaces that change in a stream's mailbox.

The chunks' turns are captured as the listener schedules them (``loop.call_later``) and run by
the test in order, so nothing depends on how fast this machine's loop turns."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from onboarding import listener as listener_module
from onboarding.listener import Listener

TEAM = 7
STREAMS = 1000

# The listener LISTENs on the test database; its first LISTEN re-reads every subscribed team
# ("resync"), so the scenarios subscribe once it listens.
pytestmark = pytest.mark.django_db(transaction=True)


def run_with_listener(scenario) -> object:
    reads = itertools.count(1)

    def read(team_id: int) -> tuple[int, int]:
        return team_id, next(reads)

    async def main():
        listener = Listener(asyncio.get_running_loop(), read)
        assert await listener.wait_listening(10)
        try:
            return await scenario(listener)
        finally:
            await listener.stop()

    return asyncio.run(main())


async def scheduled_refresh(listener: Listener) -> list[tuple]:
    """Request a refresh of TEAM and return its chunks as scheduled, (delay, callback,
    subscriptions, delivery), without running them."""
    loop = listener.loop
    scheduled: list[tuple] = []
    real_call_later = loop.call_later

    def call_later(delay, callback, *args):
        if callback is listener_module._deliver_all:
            scheduled.append((delay, callback, *args))
            return None
        return real_call_later(delay, callback, *args)  # asyncio.sleep and the like

    loop.call_later = call_later
    try:
        listener.request_read(TEAM, "refresh")
        deadline = time.monotonic() + 10
        while not scheduled:  # the read runs on the reader thread, then is handed out
            assert time.monotonic() < deadline, "the refresh read was never handed out"
            await asyncio.sleep(0.01)
    finally:
        del loop.call_later  # the loop's own method again
    return scheduled


def test_a_refresh_reaches_every_stream_in_chunks_on_later_turns():
    async def scenario(listener: Listener):
        streams = [listener.subscribe(TEAM) for _ in range(STREAMS)]
        scheduled = await scheduled_refresh(listener)
        nothing_yet = all(s._item is listener_module._EMPTY for s in streams)
        for _, callback, chunk, delivery in scheduled:
            callback(chunk, delivery)
        shown = await asyncio.wait_for(asyncio.gather(*(s.get() for s in streams)), 10)
        return streams, scheduled, nothing_yet, shown

    streams, scheduled, nothing_yet, shown = run_with_listener(scenario)

    delays = [delay for delay, *_ in scheduled]
    assert delays == sorted(delays) and delays[0] == 0 and len(set(delays)) == len(delays)
    assert all(len(chunk) <= listener_module.REFRESH_CHUNK for _, _, chunk, _ in scheduled)
    handed = [s for _, _, chunk, _ in scheduled for s in chunk]
    assert len(handed) == STREAMS and set(handed) == set(streams)
    assert nothing_yet  # no stream got it in the read's own turn
    assert {(d.reason, d.sequence) for d in shown} == {("refresh", shown[0].sequence)}


def test_a_late_refresh_chunk_never_replaces_a_newer_change():
    async def scenario(listener: Listener):
        streams = [listener.subscribe(TEAM) for _ in range(STREAMS)]
        (_, callback, first_chunk, refresh), *later = await scheduled_refresh(listener)
        callback(first_chunk, refresh)
        listener.request_read(TEAM, "change")  # read after the refresh: newer
        change = await asyncio.wait_for(streams[0].get(), timeout=10)
        if change.reason == "refresh":  # streams[0] was in the first chunk
            change = await asyncio.wait_for(streams[0].get(), timeout=10)
        for _, late_callback, chunk, delivery in later:  # their turns come after the change
            late_callback(chunk, delivery)
        last_shown = []
        for stream in streams[1:]:
            shown = await asyncio.wait_for(stream.get(), timeout=10)
            if shown.reason == "refresh":  # its chunk came before the change: the change follows
                shown = await asyncio.wait_for(stream.get(), timeout=10)
            last_shown.append(shown)
        late_ones = {s for _, _, chunk, _ in later for s in chunk}
        # A stream that had already taken the change may still be handed the older refresh;
        # the stream skips it by its sequence (live.event_stream). Nothing newer is waiting.
        left_over = [
            s._item
            for s in streams
            if s._item is not listener_module._EMPTY and s._item.sequence >= change.sequence
        ]
        return refresh, change, last_shown, late_ones, left_over

    refresh, change, last_shown, late_ones, left_over = run_with_listener(scenario)

    assert (refresh.reason, change.reason) == ("refresh", "change")
    assert change.sequence > refresh.sequence
    assert late_ones  # some chunks really came after the change
    assert {(d.reason, d.sequence) for d in last_shown} == {("change", change.sequence)}
    assert left_over == []  # nothing after the change
