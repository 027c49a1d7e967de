"""Benchmark of the GitHub sync stage against the bundled demo GitHub (run through ``bench/sync``).

For each dataset size: a fresh demo GitHub (real HTTP on 127.0.0.1) serves a demo organisation
of that many PRs; the product lists the repositories through REST, then the
real sync stage (``pipeline.stages.sync.run``) pulls every PR of the window through GraphQL into
a scratch database on the embedded PostgreSQL (or on the server of DATABASE_URL).

Printed per size: PRs/second end to end, time until the first PRs are visible to another
database connection, GraphQL requests and points per 1,000 PRs, and peak memory (tracemalloc,
in a second, separate run so tracing does not slow the timed one, with the demo server in a
child process so only the sync is measured; peak while syncing and what is still allocated
after it), next to what a REST
one-request-per-PR-detail sync would need on the same data (list pages + per PR: detail,
commits, reviews). Targets (issue 3): >= 300 PRs/s, <= 25 GraphQL requests per 1,000 PRs,
memory flat in the number of PRs.

In the timed run the demo server shares this process (and its GIL) with the sync: the
throughput is, if anything, pessimistic.

Usage: bench/sync [--sizes 500,2000] [--window-days 130] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import multiprocessing
import os
import sys
import threading
import time
import tracemalloc

import psycopg
from scratch import BASE_DIR, create_scratch_database, drop_scratch_database, peak_rss_mb

SCRATCH_DATABASE = "tformance_bench_sync"
TARGET_PRS_PER_SECOND = 300
TARGET_REQUESTS_PER_1000 = 25
REST_PAGE = 100


class FirstRowWatcher(threading.Thread):
    """Polls, on its own connection, until a committed PR of ``team_id`` is visible: what a
    user's dashboard would see first."""

    def __init__(self, url: str, team_id: int) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.team_id = team_id
        self.seen_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                row = conn.execute(
                    "SELECT 1 FROM pipeline_pullrequest WHERE team_id = %s LIMIT 1",
                    [self.team_id],
                ).fetchone()
                if row:
                    self.seen_at = time.perf_counter()
                    return
                time.sleep(0.005)


def rest_baseline(team_id: int) -> dict:
    """Requests a REST sync would make for the same PRs: per repository, list pages of 100
    (GET /repos/{o}/{r}/pulls, newest update first); per PR, the detail (sizes are not in the
    list), then commits and reviews, each paged by 100 (at least one request each)."""
    from django.db.models import Count

    from pipeline.models import PullRequest

    rows = (
        PullRequest.objects.filter(team_id=team_id)
        .values("repository_id")
        .annotate(prs=Count("id"))
    )
    list_pages = sum(math.ceil(row["prs"] / REST_PAGE) for row in rows)
    per_pr = 0
    for commits, reviews in (
        PullRequest.objects.filter(team_id=team_id)
        .annotate(c=Count("commits", distinct=True), r=Count("reviews", distinct=True))
        .values_list("c", "r")
        .iterator()
    ):
        per_pr += (
            1 + max(1, math.ceil(commits / REST_PAGE)) + max(1, math.ceil(reviews / REST_PAGE))
        )
    return {"requests": list_pages + per_pr, "list_pages": list_pages}


def serve_demo(size: int, conn) -> None:
    """Child process: the demo GitHub for ``size`` PRs until the parent says stop."""
    sys.path.insert(0, str(BASE_DIR))
    from onboarding.demo_github.dataset import build_dataset
    from onboarding.demo_github.server import DemoGitHubServer

    dataset = build_dataset(pr_count=size)
    with DemoGitHubServer(dataset=dataset) as server:
        conn.send((server.api_url, server.token, dataset.org.login))
        conn.recv()


@contextlib.contextmanager
def demo_server(size: int, *, in_process: bool):
    """(api_url, token, org login, request log or None) of a running demo GitHub."""
    if in_process:
        from onboarding.demo_github.dataset import build_dataset
        from onboarding.demo_github.server import DemoGitHubServer

        dataset = build_dataset(pr_count=size)
        with DemoGitHubServer(dataset=dataset) as server:
            yield server.api_url, server.token, dataset.org.login, server
        return
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=serve_demo, args=(size, child), daemon=True)
    process.start()
    try:
        api_url, token, org = parent.recv()
        yield api_url, token, org, None
    finally:
        parent.send("stop")
        process.join(timeout=10)


def one_sync(size: int, *, traced: bool, url: str) -> dict:
    """One sync of a fresh team. The timed run shares this process with the demo server (the
    whole path, end to end); the traced run has the server in a child process, so tracemalloc
    sees the sync's memory only."""
    from onboarding import github
    from onboarding.models import GitHubConnection, Team
    from pipeline import transitions
    from pipeline.stages import sync

    with demo_server(size, in_process=not traced) as (api_url, token, org, server):
        team = Team.objects.create(name=f"bench {size} {'traced' if traced else 'timed'}")
        connection = GitHubConnection(team=team, kind="demo", api_url=api_url, account_login="b")
        connection.set_token(token)
        connection.save()
        repositories = github.save_repositories(team, github.list_repositories(connection))
        org_repositories = [r for r in repositories if r.full_name.startswith(f"{org}/")]
        run = transitions.start_pipeline(team, [r.pk for r in org_repositories])
        if server is not None:
            server.clear_requests()

        watcher = FirstRowWatcher(url, team.pk)
        watcher.start()
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        counts = sync.run(run)
        elapsed = time.perf_counter() - started
        retained_traced = peak_traced = 0
        if traced:
            gc.collect()
            # Peak: the largest moment (one page in flight). Retained: what is still allocated
            # after the stage (what would grow if the stage accumulated PRs).
            retained_traced, peak_traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        watcher.stop.set()
        watcher.join(timeout=5)
        if server is not None:
            # The server's own log agrees with the stage's counts; it also sees failed requests.
            graphql = [r for r in server.requests if r.resource == "graphql"]
            assert len(graphql) == counts["graphql_requests"], (len(graphql), counts)
    return {
        "size": size,
        "team_id": team.pk,
        "prs": counts["prs_synced"],
        "seconds": elapsed,
        "first_visible": (watcher.seen_at - started) if watcher.seen_at else None,
        "requests": counts["graphql_requests"],
        "points": counts["graphql_points"],
        "peak_traced_mb": peak_traced / 2**20,
        "retained_traced_mb": retained_traced / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,2000", help="demo organisation sizes (PRs)")
    parser.add_argument(
        "--window-days", type=int, default=130, help="sync window (the demo spans 120 days)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    url = create_scratch_database(SCRATCH_DATABASE)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["SYNC_WINDOW_DAYS"] = str(args.window_days)
    os.environ.setdefault("TOKEN_ENCRYPTION_KEY", "Zm9yLWJlbmNoLW9ubHktbm90LWEtcmVhbC1rZXktMDA=")
    # As in production: with DEBUG on, Django keeps every SQL statement it ran in memory
    # (connection.queries), which would show up as memory growing with the number of PRs.
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    print(f"sync stage against the demo GitHub, window {args.window_days} days, scratch database")
    header = (
        f"{'PRs':>6} {'seconds':>8} {'PRs/s':>7} {'first PRs s':>11} {'GraphQL req':>11} "
        f"{'req/1k PRs':>10} {'points/1k':>9} {'peak MB':>7} {'retained MB':>11} "
        f"{'REST req':>9} {'REST req/1k':>11} {'REST/GraphQL':>12}"
    )
    results = []
    try:
        # Warm-up, not measured: imports, the demo server's schema, the database's caches.
        one_sync(60, traced=False, url=url)
        print(header)
        for size in sizes:
            timed = one_sync(size, traced=False, url=url)
            traced = one_sync(size, traced=True, url=url)
            rest = rest_baseline(timed["team_id"])
            prs = max(1, timed["prs"])
            result = {
                **timed,
                "peak_traced_mb": traced["peak_traced_mb"],
                "retained_traced_mb": traced["retained_traced_mb"],
                "rest_requests": rest["requests"],
            }
            results.append(result)
            first = f"{timed['first_visible']:.2f}" if timed["first_visible"] else "n/a"
            rate = timed["prs"] / timed["seconds"]
            print(
                f"{timed['prs']:>6} {timed['seconds']:>8.2f} {rate:>7.0f} "
                f"{first:>11} {timed['requests']:>11} {timed['requests'] * 1000 / prs:>10.1f} "
                f"{timed['points'] * 1000 / prs:>9.1f} {traced['peak_traced_mb']:>7.1f} "
                f"{traced['retained_traced_mb']:>11.2f} "
                f"{rest['requests']:>9} {rest['requests'] * 1000 / prs:>11.0f} "
                f"{rest['requests'] / max(1, timed['requests']):>12.0f}x"
            )
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_scratch_database(SCRATCH_DATABASE)

    largest = results[-1]
    rate = largest["prs"] / largest["seconds"]
    per_1000 = largest["requests"] * 1000 / max(1, largest["prs"])
    print()
    print(
        f"throughput: {rate:.0f} PRs/s at {largest['prs']} PRs "
        f"(target >= {TARGET_PRS_PER_SECOND}; ratio to target {rate / TARGET_PRS_PER_SECOND:.2f})"
    )
    print(
        f"GraphQL requests: {per_1000:.1f} per 1,000 PRs (target <= {TARGET_REQUESTS_PER_1000}; "
        f"ratio to target {per_1000 / TARGET_REQUESTS_PER_1000:.2f}); REST baseline "
        f"{largest['rest_requests'] * 1000 / max(1, largest['prs']):.0f} per 1,000 PRs, i.e. "
        f"{largest['rest_requests'] / 5000:.2f} h of a 5,000/h token for this organisation"
    )
    if len(results) > 1:
        small, big = results[0], results[-1]
        growth = big["peak_traced_mb"] / max(0.001, small["peak_traced_mb"])
        print(
            f"peak memory: {small['peak_traced_mb']:.1f} MB at {small['prs']} PRs, "
            f"{big['peak_traced_mb']:.1f} MB at {big['prs']} PRs "
            f"({big['prs'] / max(1, small['prs']):.1f}x the PRs, {growth:.2f}x the memory; "
            "target: flat); retained after the stage: "
            f"{small['retained_traced_mb']:.2f} MB and {big['retained_traced_mb']:.2f} MB"
        )
    print(f"process peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
