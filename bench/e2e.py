"""End-to-end onboarding benchmark (run through ``bench/e2e``): the demo organisation through
every real stage, in real worker processes, with the production topology.

- The bundled demo GitHub (real HTTP on 127.0.0.1, its own process) serves the demo
  organisation (``--prs``, 2,000 by default, over 120 days; the sync window covers them all).
- Detection goes through a local OpenAI-compatible server (its own process) answering every
  call in ``--latency`` (300 ms).
- The Procfile's two workers: ``worker_sync`` (queue sync) and ``worker`` (llm, default), at
  their default concurrency, started with ``manage.py worker`` when it exists, else
  ``manage.py procrastinate worker``; e-mail through Django's file backend.

Figures, timed from the commit of ``transitions.start_pipeline``:
- time to the first PR visible (a committed PR row seen from another connection: what the
  dashboard would show first); target <= 1 s;
- time to the insights e-mail (the outbox row marked sent); target <= 10 s;
- each worker's peak RSS (psutil, sampled every 50 ms), and the sync worker's during the sync
  stage only, at ``--prs`` and at ``--big-prs`` (20,000): the sync must stay flat in PR count.

Usage: bench/e2e [--prs 2000] [--big-prs 20000] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import psycopg
from scratch import (
    BASE_DIR,
    create_scratch_database,
    drop_scratch_database,
    use_scratch_database,
    write_results,
)

SCRATCH_DATABASE = "tformance_bench_e2e"
RESULTS = Path(__file__).resolve().parent / "results" / "e2e.json"
TARGET_FIRST_PR_SECONDS = 1.0
TARGET_EMAIL_SECONDS = 10.0
WINDOW_DAYS = 130  # the demo organisation spans 120 days


def _serve_demo(size: int, conn) -> None:
    sys.path.insert(0, str(BASE_DIR))
    from onboarding.demo_github.dataset import build_dataset
    from onboarding.demo_github.server import DemoGitHubServer

    dataset = build_dataset(pr_count=size)
    with DemoGitHubServer(dataset=dataset) as server:
        conn.send((server.api_url, server.token, dataset.org.login))
        conn.recv()


def _serve_llm(latency: float, conn) -> None:
    sys.path.insert(0, str(BASE_DIR))
    from tests.fixtures.llm import FakeLLMServer

    server = FakeLLMServer().start()
    server.latency = latency
    conn.send(server.base_url)
    conn.recv()
    server.stop()


@contextlib.contextmanager
def child(target, *args):
    context = multiprocessing.get_context("spawn")
    parent, end = context.Pipe()
    process = context.Process(target=target, args=(*args, end), daemon=True)
    process.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        process.join(timeout=10)
        if process.is_alive():
            process.kill()


def worker_command(queues: str) -> list[str]:
    manage = str(BASE_DIR / "manage.py")
    if (BASE_DIR / "pipeline" / "management" / "commands" / "worker.py").exists():
        base = [sys.executable, manage, "worker"]
    else:
        base = [sys.executable, manage, "procrastinate", "worker"]
    # The Procfile's default concurrency of both worker types.
    return [*base, "--queues", queues, "--concurrency", "4"]


class RSSSampler(threading.Thread):
    """Peak RSS (MB) of each named process, and of the sync worker while ``syncing`` is set."""

    def __init__(self, processes: dict[str, subprocess.Popen]) -> None:
        super().__init__(daemon=True)
        self.handles = {name: psutil.Process(p.pid) for name, p in processes.items()}
        self.peak = dict.fromkeys(processes, 0.0)
        self.sync_peak = 0.0
        self.syncing = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, handle in self.handles.items():
                with contextlib.suppress(psutil.Error):
                    rss = handle.memory_info().rss / 2**20
                    self.peak[name] = max(self.peak[name], rss)
                    if name == "worker_sync" and self.syncing.is_set():
                        self.sync_peak = max(self.sync_peak, rss)
            time.sleep(0.05)


def wait_registered(url: str, count: int, processes: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0] < count:
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.1)
    time.sleep(1.0)


def onboard(url: str, size: int, latency: float, mail_dir: str, timeout: float) -> dict:
    """One onboarding of a fresh team against a fresh demo organisation of ``size`` PRs."""
    from django.contrib.auth import get_user_model

    from onboarding import github
    from onboarding.models import GitHubConnection, Membership, Team
    from pipeline import transitions
    from pipeline.models import EmailOutbox, PullRequest, StageAttempt

    with child(_serve_demo, size) as (api_url, token, org), child(_serve_llm, latency) as llm_url:
        team = Team.objects.create(name=f"bench e2e {size}")
        user = get_user_model().objects.create_user(
            username=f"admin{size}-{time.time_ns()}", email="admin@example.com", password="!"
        )
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
        connection = GitHubConnection(team=team, kind="demo", api_url=api_url, account_login="b")
        connection.set_token(token)
        connection.save()
        repositories = github.save_repositories(team, github.list_repositories(connection))
        selected = [r.pk for r in repositories if r.full_name.startswith(f"{org}/")]

        env = dict(os.environ)
        env.update(
            OPENAI_API_KEY="bench",
            OPENAI_BASE_URL=llm_url,
            LLM_MODEL="stub-model",
            SYNC_WINDOW_DAYS=str(WINDOW_DAYS),
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=mail_dir,
        )
        processes = {
            name: subprocess.Popen(worker_command(queues), cwd=BASE_DIR, env=env)
            for name, queues in (("worker_sync", "sync"), ("worker", "llm,default"))
        }
        sampler = RSSSampler(processes)
        try:
            wait_registered(url, 2, list(processes.values()))
            sampler.start()
            load_before = os.getloadavg()[0]
            sampler.syncing.set()
            run = transitions.start_pipeline(team, selected)
            started = time.perf_counter()
            first_pr = email = sync_done = None
            with psycopg.connect(url, autocommit=True) as watch:
                deadline = time.monotonic() + timeout
                while email is None:
                    now = time.perf_counter() - started
                    if (
                        first_pr is None
                        and watch.execute(
                            "SELECT 1 FROM pipeline_pullrequest WHERE team_id = %s LIMIT 1",
                            [team.pk],
                        ).fetchone()
                    ):
                        first_pr = now
                    if (
                        sync_done is None
                        and watch.execute(
                            "SELECT 1 FROM pipeline_pipelinerun"
                            " WHERE id = %s AND stage <> 'syncing'",
                            [run.pk],
                        ).fetchone()
                    ):
                        sync_done = now
                        sampler.syncing.clear()
                    row = watch.execute(
                        "SELECT o.status FROM pipeline_emailoutbox o WHERE o.run_id = %s",
                        [run.pk],
                    ).fetchone()
                    if row and row[0] == EmailOutbox.Status.SENT:
                        email = now
                    elif row and row[0] == EmailOutbox.Status.FAILED:
                        raise RuntimeError("the e-mail failed")
                    status = watch.execute(
                        "SELECT pipeline_status FROM onboarding_team WHERE id = %s", [team.pk]
                    ).fetchone()[0]
                    if status == "failed":
                        raise RuntimeError("the pipeline failed")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"timed out in {status}")
                    time.sleep(0.01)
        finally:
            sampler.stop.set()
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
    stages = {
        a.stage: a.duration_ms for a in StageAttempt.objects.filter(run=run, outcome="succeeded")
    }
    return {
        "prs": PullRequest.objects.filter(team=team).count(),
        "stage_ms": stages,
        "first_pr_seconds": first_pr,
        "sync_seconds": sync_done,
        "email_seconds": email,
        "peak_rss_mb": {name: round(mb, 1) for name, mb in sampler.peak.items()},
        "sync_worker_peak_rss_during_sync_mb": round(sampler.sync_peak, 1),
        "load": round(max(load_before, os.getloadavg()[0]), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prs", type=int, default=2000, help="the demo organisation's PRs")
    parser.add_argument("--big-prs", type=int, default=20000, help="the large sync (0 skips)")
    parser.add_argument("--latency", type=float, default=0.3, help="LLM answer time (s)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    url = create_scratch_database(SCRATCH_DATABASE)
    use_scratch_database(url)
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    results = []
    try:
        with tempfile.TemporaryDirectory() as mail_dir:
            for size in [args.prs] + ([args.big_prs] if args.big_prs else []):
                result = onboard(url, size, args.latency, mail_dir, args.timeout)
                results.append(result)
                print(
                    f"{result['prs']:>6} PRs: first PR visible {result['first_pr_seconds']:.2f} s,"
                    f" sync done {result['sync_seconds']:.2f} s,"
                    f" e-mail {result['email_seconds']:.2f} s;"
                    f" peak RSS {result['peak_rss_mb']},"
                    f" sync worker during sync {result['sync_worker_peak_rss_during_sync_mb']} MB;"
                    f" stage ms {result['stage_ms']}"
                    f" (load {result['load']})",
                    flush=True,
                )
    finally:
        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)

    demo = results[0]
    print()
    print(
        f"time to first PR visible: {demo['first_pr_seconds']:.2f} s (target <= "
        f"{TARGET_FIRST_PR_SECONDS:g} s; ratio "
        f"{demo['first_pr_seconds'] / TARGET_FIRST_PR_SECONDS:.2f})"
    )
    print(
        f"time to the insights e-mail: {demo['email_seconds']:.2f} s (target <= "
        f"{TARGET_EMAIL_SECONDS:g} s; ratio {demo['email_seconds'] / TARGET_EMAIL_SECONDS:.2f})"
    )
    if len(results) > 1:
        small, big = results
        growth = big["sync_worker_peak_rss_during_sync_mb"] / max(
            1, small["sync_worker_peak_rss_during_sync_mb"]
        )
        print(
            f"sync worker peak RSS during the sync: {small['sync_worker_peak_rss_during_sync_mb']}"
            f" MB at {small['prs']} PRs, {big['sync_worker_peak_rss_during_sync_mb']} MB at "
            f"{big['prs']} PRs ({growth:.2f}x for {big['prs'] / max(1, small['prs']):.0f}x the "
            "PRs; target: flat)"
        )
    write_results(
        args.output,
        "e2e",
        {
            "worker_commands": [worker_command("sync")[1:], worker_command("llm,default")[1:]],
            "results": results,
            "targets": {
                "first_pr_seconds": TARGET_FIRST_PR_SECONDS,
                "email_seconds": TARGET_EMAIL_SECONDS,
            },
        },
        arguments=vars(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
