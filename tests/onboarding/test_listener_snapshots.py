"""Streams of one team opening together share one snapshot read (a reconnect storm after a
deploy), but a stream never takes a snapshot whose read began before it subscribed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from onboarding.listener import Listener


class CountingRead:
    """A team read that counts its calls and can be held until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def __call__(self, team_id: int) -> tuple[int, int]:
        self.calls += 1
        self.started.set()
        assert self.release.wait(10), "the test never released the read"
        return team_id, self.calls


def run_with_listener(read: CountingRead, scenario) -> object:
    async def main():
        listener = Listener(asyncio.get_running_loop(), read)
        try:
            return await scenario(listener)
        finally:
            await listener.stop()

    return asyncio.run(main())


@pytest.mark.django_db(transaction=True)
def test_many_streams_opening_at_once_share_a_few_reads():
    read = CountingRead()
    read.release.clear()

    async def scenario(listener: Listener):
        # One read is in progress (held), so the 200 streams that open meanwhile queue up.
        first = asyncio.ensure_future(listener.snapshot(7))
        await asyncio.get_running_loop().run_in_executor(None, read.started.wait, 10)
        others = [asyncio.ensure_future(listener.snapshot(7)) for _ in range(200)]
        await asyncio.sleep(0)
        read.release.set()
        return await first, await asyncio.gather(*others)

    first, others = run_with_listener(read, scenario)

    assert first.result == (7, 1)
    # All 200 joined the one read queued behind the held one, none took the earlier read.
    assert {delivery.result for delivery in others} == {(7, 2)}
    assert read.calls == 2


@pytest.mark.django_db(transaction=True)
def test_a_stream_never_joins_a_read_that_began_before_it_asked():
    read = CountingRead()
    read.release.clear()

    async def scenario(listener: Listener):
        early = asyncio.ensure_future(listener.snapshot(7))
        await asyncio.get_running_loop().run_in_executor(None, read.started.wait, 10)
        late = asyncio.ensure_future(listener.snapshot(7))  # the early read is under way
        await asyncio.sleep(0)
        read.release.set()
        return await early, await late

    early, late = run_with_listener(read, scenario)

    assert early.result == (7, 1)
    assert late.result == (7, 2)
    assert late.sequence > early.sequence


@pytest.mark.django_db(transaction=True)
def test_streams_of_different_teams_never_share_a_snapshot():
    read = CountingRead()

    async def scenario(listener: Listener):
        return await asyncio.gather(listener.snapshot(1), listener.snapshot(2))

    one, two = run_with_listener(read, scenario)

    assert one.result[0] == 1 and two.result[0] == 2
