"""A team's periodic refresh is handed to its streams in chunks, so a change that arrives
meanwhile is not held up behind thousands of writes; and a refresh handed out late never
replaces the newer change a stream is about to send."""

from __future__ import annotations

import asyncio
import itertools

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


def test_a_refresh_reaches_every_stream_in_chunks():
    async def scenario(listener: Listener):
        streams = [listener.subscribe(TEAM) for _ in range(STREAMS)]
        listener.request_read(TEAM, "refresh")
        first = await asyncio.wait_for(streams[0].get(), timeout=10)
        # The first chunk is out; the last one is still to come, a few turns later.
        waiting_at_first = sum(1 for s in streams if s._item is not listener_module._EMPTY)
        rest = await asyncio.wait_for(asyncio.gather(*(s.get() for s in streams[1:])), 10)
        return first, waiting_at_first, rest

    first, waiting_at_first, rest = run_with_listener(scenario)

    assert first.reason == "refresh"
    assert waiting_at_first < STREAMS - 1
    assert {delivery.sequence for delivery in rest} == {first.sequence}


def test_a_late_refresh_chunk_never_replaces_a_newer_change():
    async def scenario(listener: Listener):
        streams = [listener.subscribe(TEAM) for _ in range(STREAMS)]
        listener.request_read(TEAM, "refresh")
        refresh = await asyncio.wait_for(streams[0].get(), timeout=10)
        listener.request_read(TEAM, "change")  # read after the refresh: newer
        change = await asyncio.wait_for(streams[0].get(), timeout=10)
        # Past the last chunk's turn: whatever the refresh would still hand out has been.
        chunks = STREAMS // listener_module.REFRESH_CHUNK
        await asyncio.sleep(chunks * listener_module.REFRESH_CHUNK_GAP_SECONDS + 0.2)
        last_shown = []
        for stream in streams[1:]:
            shown = await asyncio.wait_for(stream.get(), timeout=10)
            if shown.reason == "refresh":  # its chunk came before the change: the change follows
                shown = await asyncio.wait_for(stream.get(), timeout=10)
            last_shown.append(shown)
        left_over = [s for s in streams if s._item is not listener_module._EMPTY]
        return refresh, change, last_shown, left_over

    refresh, change, last_shown, left_over = run_with_listener(scenario)

    assert (refresh.reason, change.reason) == ("refresh", "change")
    assert change.sequence > refresh.sequence
    assert {(d.reason, d.sequence) for d in last_shown} == {("change", change.sequence)}
    assert left_over == []  # no refresh arrived after the change
