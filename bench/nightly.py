"""Nightly batch benchmark (run through ``bench/nightly``): ``--teams`` onboarded teams of the
demo size through the real nightly batch, in the Procfile's two workers, against the bundled
demo GitHub (its own process).

Setup: one team is onboarded for real (every real stage, signatures only: no LLM configured);
its stored history (PRs, verdicts, reviews, repositories, a completed onboarding run) is then
copied in SQL to ``--teams - 1`` more teams, all connected to the same demo organisation and
synced "just now". On GitHub, ``--changed`` PRs are then updated: the batch is mostly unchanged.

The batch starts as the 02:00 tick would (``pipeline.nightly.start_batch``) with the shipped
defaults (NIGHTLY_MAX_IN_FLIGHT, priorities). Figures:
- wall time of the whole batch, and teams per second;
- GitHub requests per team (the pager's own count, and the demo server's log), against the
  onboarding of the same organisation measured in this run (the baseline);
- how long an onboarding started when half the teams are done waits for its first stage to
  begin (commit of ``start_pipeline`` to its sync attempt starting), against the same wait with
  the workers idle, measured in this run before the batch. Target: <= 1 s mid-batch.

Usage: bench/nightly [--teams 1000] [--prs 2000] [--changed 5] [--output PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from scratch import (
    BASE_DIR,
    create_scratch_database,
    drop_scratch_database,
    use_scratch_database,
    write_results,
)

SCRATCH_DATABASE = "tformance_bench_nightly"
RESULTS = Path(__file__).resolve().parent / "results" / "nightly.json"
TARGET_FIRST_STAGE_WAIT_SECONDS = 1.0
WINDOW_DAYS = 130  # the demo organisation spans 120 days


def _serve_demo(size: int, conn) -> None:
    """The demo GitHub. Messages: "change N" (update N PRs now), "count" (GraphQL requests so
    far), "stop"."""
    sys.path.insert(0, str(BASE_DIR))
    from onboarding.demo_github.dataset import build_dataset
    from onboarding.demo_github.server import DemoGitHubServer

    dataset = build_dataset(pr_count=size)
    with DemoGitHubServer(dataset=dataset) as server:
        conn.send((server.api_url, server.token, dataset.org.login))
        while True:
            message = conn.recv()
            if message == "stop":
                return
            if message == "count":
                conn.send(sum(1 for r in server.requests if r.resource == "graphql"))
            elif message.startswith("change "):
                count = int(message.split()[1])
                later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1)
                names = [repo.name for repo in dataset.repositories]
                for i in range(count):
                    pulls = dataset.pulls_by_updated[names[i % len(names)]]
                    pr = pulls[len(pulls) // 2]
                    pr.updated_at = later.replace(microsecond=0)
                    pr.title = f"{pr.title} (edited)"
                    pulls.sort(key=lambda p: p.updated_at, reverse=True)
                conn.send(count)


def worker_command(queues: str) -> list[str]:
    manage = str(BASE_DIR / "manage.py")
    if (BASE_DIR / "pipeline" / "management" / "commands" / "worker.py").exists():
        base = [sys.executable, manage, "worker"]
    else:
        base = [sys.executable, manage, "procrastinate", "worker"]
    return [*base, "--queues", queues, "--concurrency", "4"]  # the Procfile's defaults


def wait_registered(url: str, count: int, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] < count:
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.1)
    time.sleep(1.0)


def new_connected_team(name: str, api_url: str, token: str, org: str):
    from django.contrib.auth import get_user_model

    from onboarding import github
    from onboarding.models import GitHubConnection, Membership, Team

    team = Team.objects.create(name=name)
    admin = get_user_model().objects.create_user(
        username=f"admin-{team.pk}", email=f"admin-{team.pk}@example.com", password="!"
    )
    Membership.objects.create(team=team, user=admin, role=Membership.Role.ADMIN)
    connection = GitHubConnection(team=team, kind="demo", api_url=api_url, account_login="b")
    connection.set_token(token)
    connection.save()
    repositories = github.save_repositories(team, github.list_repositories(connection))
    return team, [r.pk for r in repositories if r.full_name.startswith(f"{org}/")]


def first_stage_wait(url: str, team, repository_ids: list[int], timeout: float) -> float:
    """Seconds from the commit of start_pipeline to its sync attempt beginning."""
    from pipeline import transitions

    run = transitions.start_pipeline(team, repository_ids)
    committed = time.perf_counter()
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as watch:
        while not watch.execute(
            "SELECT 1 FROM pipeline_stageattempt WHERE run_id = %s", [run.pk]
        ).fetchone():
            if time.monotonic() > deadline:
                raise RuntimeError("the onboarding's first stage never began")
            time.sleep(0.005)
    return time.perf_counter() - committed, run


def wait_run(url: str, run_id: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as watch:
        while True:
            state = watch.execute(
                "SELECT state FROM pipeline_pipelinerun WHERE id = %s", [run_id]
            ).fetchone()[0]
            if state != "running":
                return state
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} did not finish")
            time.sleep(0.05)


CLONE_SQL = [
    # Teams, their connections (same token ciphertext) and repositories, synced just now.
    """
    CREATE TEMP TABLE clone_team AS
    SELECT g AS n, NULL::bigint AS id FROM generate_series(1, %(count)s) g
    """,
    """
    WITH made AS (
        INSERT INTO onboarding_team (name, created_at, pipeline_status, pipeline_error,
                                     pipeline_started_at, pipeline_completed_at)
        SELECT 'bench team ' || n, now(), 'complete', '', now(), now() FROM clone_team
        RETURNING id, name)
    UPDATE clone_team c SET id = made.id FROM made WHERE made.name = 'bench team ' || c.n
    """,
    """
    INSERT INTO onboarding_githubconnection (team_id, kind, encrypted_token, api_url,
                                             account_login, connected_at)
    SELECT c.id, g.kind, g.encrypted_token, g.api_url, g.account_login, now()
      FROM clone_team c, onboarding_githubconnection g WHERE g.team_id = %(template)s
    """,
    """
    INSERT INTO onboarding_repository (team_id, github_id, full_name, is_private,
                                       default_branch, selected, last_synced_at)
    SELECT c.id, r.github_id, r.full_name, r.is_private, r.default_branch, r.selected, now()
      FROM clone_team c, onboarding_repository r WHERE r.team_id = %(template)s
    """,
    """
    INSERT INTO pipeline_pipelinerun (team_id, kind, state, stage, repository_ids, started_at,
                                      finished_at, error, progress, summary)
    SELECT c.id, 'onboarding', 'complete', 'complete',
           (SELECT jsonb_agg(r.id ORDER BY r.id) FROM onboarding_repository r
             WHERE r.team_id = c.id AND r.selected),
           now() - interval '1 minute', now(), '', '{}', '{}'
      FROM clone_team c
    """,
    """
    INSERT INTO pipeline_pullrequest (team_id, repository_id, number, node_id, title, body,
        state, is_draft, author_login, author_is_bot, head_branch, labels, created_at,
        updated_at, merged_at, closed_at, first_review_at, additions, deletions, changed_files,
        review_rounds, is_revert, synced_at)
    SELECT nr.team_id, nr.id, p.number, p.node_id, p.title, p.body, p.state, p.is_draft,
           p.author_login, p.author_is_bot, p.head_branch, p.labels, p.created_at, p.updated_at,
           p.merged_at, p.closed_at, p.first_review_at, p.additions, p.deletions,
           p.changed_files, p.review_rounds, p.is_revert, now()
      FROM pipeline_pullrequest p
      JOIN onboarding_repository tr ON tr.id = p.repository_id
      JOIN onboarding_repository nr ON nr.github_id = tr.github_id
      JOIN clone_team c ON c.id = nr.team_id
     WHERE p.team_id = %(template)s
    """,
    """
    CREATE TEMP TABLE pr_map AS
    SELECT tp.id AS template_id, np.id AS new_id, np.team_id
      FROM pipeline_pullrequest tp
      JOIN onboarding_repository tr ON tr.id = tp.repository_id
      JOIN onboarding_repository nr ON nr.github_id = tr.github_id
      JOIN clone_team c ON c.id = nr.team_id
      JOIN pipeline_pullrequest np ON np.repository_id = nr.id AND np.number = tp.number
     WHERE tp.team_id = %(template)s
    """,
    """
    INSERT INTO pipeline_aiverdict (pull_request_id, team_id, is_ai_assisted, source, tools,
        signature_hits, catalogue_version, llm_assisted, llm_tools, llm_confidence, llm_reason,
        llm_content_hash, llm_prompt_version, llm_error, updated_at)
    SELECT m.new_id, m.team_id, v.is_ai_assisted, v.source, v.tools, v.signature_hits,
           v.catalogue_version, v.llm_assisted, v.llm_tools, v.llm_confidence, v.llm_reason,
           v.llm_content_hash, v.llm_prompt_version, v.llm_error, now()
      FROM pr_map m JOIN pipeline_aiverdict v ON v.pull_request_id = m.template_id
    """,
    """
    INSERT INTO pipeline_pullrequestreview (pull_request_id, node_id, state, submitted_at,
                                            reviewer_login, reviewer_is_bot)
    SELECT m.new_id, r.node_id, r.state, r.submitted_at, r.reviewer_login, r.reviewer_is_bot
      FROM pr_map m JOIN pipeline_pullrequestreview r ON r.pull_request_id = m.template_id
    """,
    "ANALYZE",
]


def clone_template(url: str, template_id: int, count: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=False) as conn:
        for statement in CLONE_SQL:
            conn.execute(statement, {"count": count, "template": template_id})
        conn.commit()
    return time.perf_counter() - started


@contextlib.contextmanager
def demo_github(size: int):
    context = multiprocessing.get_context("spawn")
    parent, end = context.Pipe()
    process = context.Process(target=_serve_demo, args=(size, end), daemon=True)
    process.start()
    try:
        yield parent, parent.recv()
    finally:
        parent.send("stop")
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def run_benchmark(url: str, args) -> dict:
    from django.db.models import Avg, Max, Min

    from pipeline import nightly
    from pipeline.models import PipelineRun, RunKind, StageAttempt

    # The onboardings' completion e-mails go nowhere (their sending is not measured here).
    env = dict(
        os.environ,
        SYNC_WINDOW_DAYS=str(WINDOW_DAYS),
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    env.pop("OPENAI_API_KEY", None)  # signatures only: this measures the batch, not an LLM
    with demo_github(args.prs) as (demo, (api_url, token, org)):
        processes = {
            name: subprocess.Popen(worker_command(queues), cwd=BASE_DIR, env=env)
            for name, queues in (("worker_sync", "sync"), ("worker", "llm,default"))
        }
        try:
            wait_registered(url, 2, list(processes.values()))
            # Baseline 1: an onboarding with idle workers (its first-stage wait, its requests).
            template, repository_ids = new_connected_team("template", api_url, token, org)
            idle_wait, onboarding = first_stage_wait(url, template, repository_ids, 60)
            if wait_run(url, onboarding.pk, args.timeout) != "complete":
                raise RuntimeError("the template onboarding did not complete")
            demo.send("count")
            onboarding_requests = demo.recv()
            print(
                f"onboarding of the demo organisation: {onboarding_requests} GraphQL requests;"
                f" first stage began {idle_wait * 1000:.0f} ms after the start (idle workers)",
                flush=True,
            )

            clone_seconds = clone_template(url, template.pk, args.teams - 1)
            print(
                f"{args.teams - 1} more teams copied from it in {clone_seconds:.1f} s", flush=True
            )
            late, late_ids = new_connected_team("late onboarding", api_url, token, org)
            demo.send(f"change {args.changed}")
            demo.recv()
            demo.send("count")
            before_batch = demo.recv()

            tick = math.ceil(time.time())  # ticks are whole seconds, after the onboardings
            while time.time() < tick:
                time.sleep(0.01)
            batch_started = datetime.datetime.fromtimestamp(tick, tz=datetime.UTC)
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            nightly.start_batch(tick)
            mid_wait = None
            half = args.teams // 2
            with psycopg.connect(url, autocommit=True) as watch:
                deadline = time.monotonic() + args.timeout
                while True:
                    done = watch.execute(
                        "SELECT count(*) FROM pipeline_pipelinerun WHERE kind = 'nightly'"
                        " AND state <> 'running' AND started_at >= %s",
                        [batch_started],
                    ).fetchone()[0]
                    if mid_wait is None and done >= half:
                        mid_wait, late_run = first_stage_wait(url, late, late_ids, 60)
                        print(
                            f"onboarding started with {done} of {args.teams} teams done: first"
                            f" stage began after {mid_wait * 1000:.0f} ms",
                            flush=True,
                        )
                    if done >= args.teams:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"batch timed out with {done} teams done")
                    time.sleep(0.05)
            wall = time.perf_counter() - started
            load_after = os.getloadavg()[0]
            late_state = wait_run(url, late_run.pk, args.timeout)
            demo.send("count")
            # The mid-batch onboarding synced the same organisation: take its requests out.
            batch_requests = demo.recv() - before_batch - onboarding_requests
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM procrastinate_workers")

    runs = PipelineRun.objects.filter(kind=RunKind.NIGHTLY, started_at__gte=batch_started)
    by_state = {
        state: runs.filter(state=state).count()
        for state in sorted(set(runs.values_list("state", flat=True)))
    }
    syncs = StageAttempt.objects.filter(run__in=runs, stage="syncing", outcome="succeeded")
    per_team = [a.counts.get("graphql_requests", 0) for a in syncs]
    changed_prs = [a.counts.get("prs_synced", 0) for a in syncs]
    span = runs.aggregate(first=Min("started_at"), last=Max("finished_at"))
    durations = StageAttempt.objects.filter(run__in=runs, outcome="succeeded").values("stage")
    stage_ms = {
        row["stage"]: round(row["avg"], 1)
        for row in durations.annotate(avg=Avg("duration_ms")).values("stage", "avg")
    }
    return {
        "teams": args.teams,
        "prs_per_team": args.prs,
        "changed_prs_on_github": args.changed,
        "wall_seconds": round(wall, 2),
        "teams_per_second": round(args.teams / wall, 2),
        "runs_by_state": by_state,
        "first_run_started_to_last_finished_seconds": round(
            (span["last"] - span["first"]).total_seconds(), 2
        )
        if span["first"] and span["last"]
        else None,
        "github_requests_per_team": round(sum(per_team) / max(1, len(per_team)), 2),
        "github_requests_per_team_demo_log": round(batch_requests / args.teams, 2),
        "onboarding_github_requests": onboarding_requests,
        "prs_synced_per_team_max": max(changed_prs, default=0),
        "nightly_stage_ms_avg": stage_ms,
        "onboarding_first_stage_wait_idle_seconds": round(idle_wait, 3),
        "onboarding_first_stage_wait_mid_batch_seconds": round(mid_wait, 3)
        if mid_wait is not None
        else None,
        "mid_batch_onboarding_state": late_state,
        "clone_seconds": round(clone_seconds, 1),
        "load": round(max(load_before, load_after), 2),
        "nightly_max_in_flight": int(os.environ.get("NIGHTLY_MAX_IN_FLIGHT", "2")),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=1000)
    parser.add_argument("--prs", type=int, default=2000, help="the demo organisation's PRs")
    parser.add_argument("--changed", type=int, default=5, help="PRs updated on GitHub")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.teams < 2:
        parser.error("--teams must be at least 2")

    url = create_scratch_database(SCRATCH_DATABASE)
    use_scratch_database(url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    try:
        result = run_benchmark(url, args)
    finally:
        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)

    wait = result["onboarding_first_stage_wait_mid_batch_seconds"]
    print()
    print(
        f"nightly batch, {result['teams']} teams of {result['prs_per_team']} PRs"
        f" ({result['changed_prs_on_github']} changed): {result['wall_seconds']:.1f} s wall,"
        f" {result['teams_per_second']:.1f} teams/s; runs {result['runs_by_state']}"
    )
    print(
        f"GitHub requests per team: {result['github_requests_per_team']:.2f} (demo server log:"
        f" {result['github_requests_per_team_demo_log']:.2f}); onboarding the same organisation:"
        f" {result['onboarding_github_requests']} (ratio"
        f" {result['github_requests_per_team'] / max(1, result['onboarding_github_requests']):.3f})"
    )
    print(
        f"onboarding's first stage mid-batch: {wait:.3f} s (target <= "
        f"{TARGET_FIRST_STAGE_WAIT_SECONDS:g} s;"
        f" ratio {wait / TARGET_FIRST_STAGE_WAIT_SECONDS:.2f});"
        f" idle workers: {result['onboarding_first_stage_wait_idle_seconds']:.3f} s"
        f" (load {result['load']})"
    )
    write_results(
        args.output,
        "nightly",
        {
            "worker_commands": [worker_command("sync")[1:], worker_command("llm,default")[1:]],
            "result": result,
            "targets": {"first_stage_wait_mid_batch_seconds": TARGET_FIRST_STAGE_WAIT_SECONDS},
        },
        arguments=vars(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
