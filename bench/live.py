"""Commit-to-browser latency of pipeline status events through the real SSE stream (run through
``bench/live``).

One uvicorn web process serves the product's ASGI app on a scratch database (embedded
PostgreSQL, or the server of DATABASE_URL). This process opens 1, 100 and 1,000 concurrent
``/progress/stream/`` connections (plain sockets speaking HTTP/1.1, so the client side costs as
little as possible), by default all watching one team: the worst case, where every event goes
to every client (``--teams N`` spreads them over N teams and counts any event a client of another
team saw). It then commits progress changes the way a stage does (``pipeline.progress.report``) and
timestamps each commit just before COMMIT; each client timestamps the moment the fragment with
the new number arrives. Both clocks are CLOCK_MONOTONIC on this machine.

Printed per level: p50/p95/max latency over every (event, client) pair, events lost, the web
process's RSS, the database connections it holds, and how long the level's streams took to
open (all of them connecting at once, 100 connects in flight: the reconnect storm after a
deploy, until every stream has its first snapshot). Targets (issue 9): p95 <= 50 ms at 1,000
clients and <= 250 ms at 5,000 on one web process; 1,000 streams open in <= 3 s; one LISTEN
connection for all of them. Results go to bench/results/live.json.

Usage: bench/live [--clients 1,100,1000,5000] [--events 20] [--teams 1] [--loop auto] [--http auto]
                  [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time

import psycopg
from scratch import BASE_DIR, create_scratch_database, drop_scratch_database, write_results

SCRATCH_DATABASE = "tformance_bench_live"
WEB_APPLICATION_NAME = "bench-live-web"
# p95 target by number of clients (the largest level at or below it applies).
TARGET_P95_MS = {1: 50.0, 5000: 250.0}
TARGET_OPEN_SECONDS_PER_1000 = 3.0
# A level whose streams have not all opened after this (per 1,000 clients) is reported as such.
OPEN_TIMEOUT_SECONDS_PER_1000 = 60.0
RESULTS = BASE_DIR / "bench" / "results" / "live.json"


def target_p95(clients: int) -> float:
    return TARGET_P95_MS[max(level for level in TARGET_P95_MS if level <= clients)]


TARGET_CONNECTIONS = 1
MARKER = re.compile(rb'data-counter="prs_synced">(\d+)<')


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class StreamClient(asyncio.Protocol):
    """One browser tab: reads the stream and timestamps each prs_synced value it sees. A bare
    protocol (no StreamReader, no task per read) keeps the client side's cost per event low;
    it shares this 2-core machine with the web process it measures."""

    def __init__(self, cookie: str) -> None:
        self.cookie = cookie
        self.arrivals: dict[int, float] = {}
        self.ready = asyncio.Event()
        self.refused: bytes = b""
        self.transport: asyncio.Transport | None = None
        self._pending = b""
        self._headers_done = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(
            b"GET /progress/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Accept: text/event-stream\r\nCookie: sessionid=" + self.cookie.encode() + b"\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        pending = self._pending + data
        if not self._headers_done:
            if b"\r\n\r\n" not in pending:
                self._pending = pending
                return
            if not pending.startswith(b"HTTP/1.1 200"):
                self.refused = pending[:200]
                self.ready.set()
                return
            self._headers_done = True
        if not self.ready.is_set() and b"data-status" in pending:
            self.ready.set()
        last_end = 0
        for match in MARKER.finditer(pending):
            self.arrivals.setdefault(int(match.group(1)), now)
            last_end = match.end()
        # Keep a tail in case a marker is split across reads.
        self._pending = pending[max(last_end, len(pending) - 64) :]

    def close(self) -> None:
        if self.transport:
            self.transport.close()


def run_async(coroutine):
    """uvloop when installed (as uvicorn uses it for the web process), asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def commit_progress(run_id: int, value: int) -> float:
    """Commit a progress change as a stage does; return the moment just before COMMIT."""
    from django.db import transaction

    from pipeline import progress
    from pipeline.models import PipelineRun

    run = PipelineRun.objects.get(pk=run_id)
    with transaction.atomic():
        progress.report(run, prs_synced=value)
        before_commit = time.monotonic()
    return before_commit


def web_connections(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = ANY(%s)"
            " GROUP BY application_name",
            [[WEB_APPLICATION_NAME, "tformance live listener"]],
        ).fetchall()
    return dict(rows)


async def measure(
    level: int, events: int, port: int, watchers: list[tuple[str, int]], web_pid: int, url: str
) -> dict:
    """``watchers``: (session cookie, run id) of each team; client i watches team i mod n.
    Event i changes team i mod n; only that team's clients may see it."""
    import psutil

    loop = asyncio.get_running_loop()
    teams = len(watchers)
    clients = [StreamClient(watchers[i % teams][0]) for i in range(level)]
    connect_started = time.monotonic()
    for batch_start in range(0, level, 100):
        await asyncio.gather(
            *(
                loop.create_connection(lambda c=c: c, "127.0.0.1", port)
                for c in clients[batch_start : batch_start + 100]
            )
        )
    open_timeout = OPEN_TIMEOUT_SECONDS_PER_1000 * max(1, level / 1000)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), open_timeout)
    except TimeoutError:
        # A measured result, not a crash: say how many streams had their snapshot by then.
        opened = sum(1 for c in clients if c.ready.is_set())
        for client in clients:
            client.close()
        await asyncio.sleep(1.0)
        return {"clients": level, "opened": opened, "open_timeout_seconds": open_timeout}
    refused = [c.refused for c in clients if c.refused]
    if refused:
        raise RuntimeError(f"{len(refused)} streams refused: {refused[0]!r}")
    connect_seconds = time.monotonic() - connect_started
    await asyncio.sleep(0.5)

    latencies: list[float] = []
    lost = 0
    leaked = 0
    base = level * 1_000_000
    for index in range(events):
        value = base + index
        team_index = index % teams
        audience = [c for i, c in enumerate(clients) if i % teams == team_index]
        committed_at = await loop.run_in_executor(
            None, commit_progress, watchers[team_index][1], value
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(value not in c.arrivals for c in audience):
            await asyncio.sleep(0.002)
        for client in audience:
            arrived = client.arrivals.get(value)
            if arrived is None:
                lost += 1
            else:
                latencies.append((arrived - committed_at) * 1000)
        # Past pipeline.progress's coalescing window: each event is announced at its commit
        # (a report inside the window would be announced at the window's end instead).
        await asyncio.sleep(0.15)
    for i, client in enumerate(clients):
        leaked += sum(
            1 for value in client.arrivals if (value - base) % teams != i % teams and value >= base
        )

    web_process = psutil.Process(web_pid)
    rss_mb = web_process.memory_info().rss / 2**20
    threads = web_process.num_threads()
    connections = web_connections(url)
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    return {
        "clients": level,
        "samples": len(latencies),
        "lost": lost,
        "leaked": leaked,
        "p50": statistics.median(latencies) if latencies else float("nan"),
        "p95": percentile(latencies, 0.95) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
        "rss_mb": rss_mb,
        "threads": threads,
        "connections": connections,
        "connect_seconds": connect_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,100,1000,5000")
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument(
        "--teams",
        type=int,
        default=1,
        help="spread the clients over this many teams (1: every event goes to every client)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--loop", default="auto", help="uvicorn --loop (auto: uvloop if installed)")
    parser.add_argument("--http", default="auto", help="uvicorn --http (auto: httptools if any)")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]

    open_files = raise_open_files_limit()
    url = create_scratch_database(SCRATCH_DATABASE)
    from cryptography.fernet import Fernet

    # Production-like settings (DEBUG off), shared by this process and the web process: the
    # session cookie made here must be readable there.
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "settings.base",
        "DJANGO_DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "bench-live-" + os.urandom(16).hex(),
        "TOKEN_ENCRYPTION_KEY": os.environ.get("TOKEN_ENCRYPTION_KEY")
        or Fernet.generate_key().decode(),
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from onboarding.models import Membership, Repository, Team
    from pipeline import transitions

    call_command("migrate", verbosity=0)
    watchers = []
    for number in range(args.teams):
        team = Team.objects.create(name=f"Bench {number}")
        user = get_user_model().objects.create_user(
            username=f"bench{number}", password="bench-" * 3
        )
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
        repos = [
            Repository.objects.create(
                team=team, github_id=number * 10 + i, full_name=f"bench{number}/r{i}"
            )
            for i in range(3)
        ]
        run = transitions.start_pipeline(team, [r.pk for r in repos])
        browser = Client()
        browser.force_login(user)
        watchers.append((browser.cookies["sessionid"].value, run.pk))

    port = free_port()
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "settings.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "off",
            "--backlog",
            "4096",
            "--timeout-graceful-shutdown",
            "2",
            "--loop",
            args.loop,
            "--http",
            args.http,
        ],
        cwd=BASE_DIR,
        env={**env, "PGAPPNAME": WEB_APPLICATION_NAME},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or web.poll() is not None:
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.1)

        print(
            f"bench/live: one uvicorn process (pid {web.pid}), {args.events} events per level,"
            f" clients spread over {args.teams} team(s); open-files limit {open_files};"
            f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs;"
            f" uvicorn --loop {args.loop} --http {args.http}"
        )
        results = []
        for level in levels:
            result = run_async(measure(level, args.events, port, watchers, web.pid, url))
            results.append(result)
            if "opened" in result:
                print(
                    f"  {level:>5} clients: only {result['opened']} streams had their first"
                    f" snapshot after {result['open_timeout_seconds']:.0f} s (target"
                    f" {TARGET_OPEN_SECONDS_PER_1000 * level / 1000:.0f} s); level not measured"
                )
                continue
            listen = result["connections"].get("tformance live listener", 0)
            other = result["connections"].get(WEB_APPLICATION_NAME, 0)
            print(
                f"  {level:>5} clients: p50 {result['p50']:7.1f} ms  p95 {result['p95']:7.1f} ms"
                f"  max {result['max']:7.1f} ms  (target p95 <= {target_p95(level):.0f} ms,"
                f" ratio {result['p95'] / target_p95(level):.2f})  lost {result['lost']}"
                f"/{result['samples'] + result['lost']}, seen by another team {result['leaked']}"
            )
            print(
                f"                 web RSS {result['rss_mb']:6.1f} MB, {result['threads']} threads;"
                f"  database connections"
                f" of the web process: {listen} LISTEN + {other} Django"
                f" (stream reader, requests in flight)"
                f" (target: {TARGET_CONNECTIONS} LISTEN for all);"
                f"  {level} streams opened in {result['connect_seconds']:.1f} s"
                + (
                    f" (target {TARGET_OPEN_SECONDS_PER_1000 * level / 1000:.0f} s at this rate)"
                    if level >= 1000
                    else ""
                )
            )
            result["load"] = round(os.getloadavg()[0], 2)
        print(f"  load average at the end: {os.getloadavg()[0]:.1f} (other work skews the figures)")
        write_results(
            args.output,
            "live",
            {
                "levels": results,
            },
            arguments=vars(args),
        )
        return 0
    finally:
        web.terminate()
        try:
            web.wait(15)
        except subprocess.TimeoutExpired:
            web.kill()
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)


if __name__ == "__main__":
    sys.exit(main())
