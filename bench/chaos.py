"""Chaos benchmark: N pipelines (default 200) with the real stages against the demo GitHub, on 2
worker processes, one of which is SIGKILLed every few seconds and replaced (run through
``bench/chaos``). The next kill comes ``--kill-every`` seconds after the replacement has
registered (on a loaded machine a worker takes seconds to start; killing faster than that
would leave no worker at all).

Everything runs as shipped: real worker processes with the product's settings (no rescue or
heartbeat override), the real sync/detect/metrics/insights stages and the completion e-mail
(file backend), the demo GitHub in a child process with one token per team (so no team waits on
another's rate-limit budget), all on a scratch database of the product's PostgreSQL server.

Printed, and written as JSON under ``bench/results/``:
- completed / lost pipelines (lost = not complete when the run ends: failed or stuck);
- duplicated effects: PR rows (and PR rows missing against the demo dataset), stage successes
  recorded twice for one run, completion e-mails sent more than once to a team;
- drift: ``pipeline check``'s query (``pipeline.invariant.find_drift``) every couple of seconds
  during the run, and at the end;
- kill -> running again: for every stage execution a killed worker held (its history row still
  open at the kill), the time until that stage of that run started again on a live worker;
  p50 / p95 / max; and kill -> rescued (the rescuer closed that execution and deferred its
  successor). Targets (issue 8): 0 lost / 0 duplicated / 0 drift, p95 <= 5 s.

The figures are counts and latencies against fixed targets (there is no chaos-free baseline to
divide by); the elapsed time and the load average are printed for context.

Usage: bench/chaos [--pipelines 200] [--prs 600] [--kill-every 3-5] [--timeout 1200] [--keep]
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from email import message_from_bytes
from pathlib import Path

from scratch import BASE_DIR, create_scratch_database, drop_scratch_database

SCRATCH_DATABASE = "tformance_bench_chaos"
RESULTS = BASE_DIR / "bench" / "results"
TARGET_P95_SECONDS = 5.0
# The workers as the Procfile's `worker` type, but each on every queue (2 workers in all).
WORKER_COMMAND = ["manage.py", "worker", "--concurrency", "4"]


def serve_demo(pr_count: int, tokens: list[str], log_path: str, conn) -> None:
    """Child process: the demo GitHub until the parent says stop. Its error output (a killed
    worker leaves broken pipes behind) goes to ``log_path``."""
    sys.stderr = open(log_path, "w")  # noqa: SIM115 (the child's whole lifetime)
    sys.path.insert(0, str(BASE_DIR))
    from onboarding.demo_github.dataset import build_dataset
    from onboarding.demo_github.server import DemoGitHubServer

    dataset = build_dataset(pr_count=pr_count)
    with DemoGitHubServer(dataset=dataset, tokens=tuple(tokens)) as server:
        windows = {}
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=90)
        for pr in dataset.pull_requests:
            if pr.updated_at >= since:
                windows[pr.repository.name] = windows.get(pr.repository.name, 0) + 1
        repos = [(r.name, r.database_id) for r in dataset.repositories]
        conn.send((server.api_url, dataset.org.login, repos, windows))
        conn.recv()


class Workers:
    """Worker processes on the scratch database; learns each one's procrastinate worker id
    from the order in which new rows appear in procrastinate_workers (spawns never block the
    kill loop: a replacement registers while the others keep working)."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[int, subprocess.Popen] = {}  # procrastinate worker id -> process
        self.pending: list[subprocess.Popen] = []  # started, not registered yet
        self.started = 0
        self.seen_id = self._max_worker_id()

    def _max_worker_id(self) -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers")
            return cursor.fetchone()[0]

    def spawn(self) -> None:
        log = (self.log_dir / f"worker-{self.started}.log").open("w")
        self.started += 1
        self.pending.append(
            subprocess.Popen(
                [sys.executable, *WORKER_COMMAND],
                cwd=BASE_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )

    def register(self) -> None:
        """Match new worker rows to the processes started earlier, in order."""
        from django.db import connection

        if not self.pending:
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT id FROM procrastinate_workers WHERE id > %s ORDER BY id", [self.seen_id]
            )
            new_ids = [row[0] for row in cursor.fetchall()]
        for worker_id in new_ids:
            if not self.pending:
                break
            self.processes[worker_id] = self.pending.pop(0)
            self.seen_id = worker_id

    def wait_registered(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not register")
            self.register()
            time.sleep(0.05)

    def kill(self, worker_id: int) -> None:
        process = self.processes.pop(worker_id)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        everyone = [*self.processes.values(), *self.pending]
        for process in everyone:
            process.send_signal(signal.SIGTERM)
        for process in everyone:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        self.pending.clear()


def held_executions(worker_id: int) -> list[tuple[int, str, int]]:
    """(run id, stage, job id) of every stage execution ``worker_id`` holds right now: its job
    is `doing` on that worker and its history row is still open."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT attempt.run_id, attempt.stage, job.id
              FROM procrastinate_jobs job
              JOIN pipeline_stageattempt attempt
                ON attempt.job_id = job.id AND attempt.finished_at IS NULL
             WHERE job.status = 'doing' AND job.worker_id = %s
            """,
            [worker_id],
        )
        return cursor.fetchall()


def create_teams(count: int, api_url: str, org: str, repos: list, tokens: list[str]) -> list:
    from django.contrib.auth import get_user_model

    from onboarding import crypto
    from onboarding.models import GitHubConnection, Membership, Repository, Team

    teams = []
    for index in range(count):
        team = Team.objects.create(name=f"Chaos {index:03d}")
        user = get_user_model().objects.create_user(
            f"chaos{index:03d}",
            f"chaos{index:03d}@example.com",  # no password: no hashing
        )
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
        GitHubConnection.objects.create(
            team=team,
            kind=GitHubConnection.Kind.DEMO,
            encrypted_token=crypto.encrypt_token(tokens[index]),
            api_url=api_url,
            account_login="demo-lead",
        )
        name, github_id = repos[index % len(repos)]
        repository = Repository.objects.create(
            team=team, github_id=github_id, full_name=f"{org}/{name}"
        )
        teams.append((team, repository, name))
    return teams


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def count_emails(folder: Path) -> dict[str, int]:
    sent: dict[str, int] = {}
    for path in folder.glob("*.log"):
        # The file backend appends every message to a file, separated by a line of dashes.
        for chunk in path.read_bytes().split(b"-" * 79):
            if not chunk.strip():
                continue
            to = message_from_bytes(chunk.strip()).get("To", "")
            for address in filter(None, (a.strip() for a in to.split(","))):
                sent[address] = sent.get(address, 0) + 1
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--prs", type=int, default=600, help="PRs in the demo organisation")
    parser.add_argument("--kill-every", default="3-5", help="seconds between kills: MIN-MAX")
    parser.add_argument("--timeout", type=float, default=1200, help="give up after (s)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    kill_min, kill_max = (float(x) for x in args.kill_every.split("-"))
    rng = random.Random(args.seed)

    from cryptography.fernet import Fernet

    url = create_scratch_database(SCRATCH_DATABASE)
    email_dir = Path(tempfile.mkdtemp(prefix="chaos-mail-"))
    log_dir = Path(tempfile.mkdtemp(prefix="chaos-logs-"))
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "settings.base",
        "DJANGO_DEBUG": "false",
        "SECRET_KEY": "bench-chaos-secret-key",
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(email_dir),
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)

    tokens = [f"chaos-token-{i:03d}" for i in range(args.pipelines)]
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    demo = context.Process(
        target=serve_demo,
        args=(args.prs, tokens, str(log_dir / "demo-github.log"), child),
        daemon=True,
    )
    demo.start()
    workers = Workers(env, log_dir)
    try:
        if not parent.poll(120):
            raise RuntimeError("the demo GitHub did not start")
        api_url, org, repos, windows = parent.recv()
        result = run(args, rng, kill_min, kill_max, workers, api_url, org, repos, windows, tokens)
        result["email"] = count_emails(email_dir)
    finally:
        workers.stop_all()
        parent.send("stop")
        demo.join(timeout=10)
        from django.db import connections

        connections.close_all()
        if not args.keep:
            drop_scratch_database(SCRATCH_DATABASE)
    return report(args, result, log_dir)


def run(args, rng, kill_min, kill_max, workers, api_url, org, repos, windows, tokens) -> dict:
    from django.db import close_old_connections

    from pipeline import rescue, transitions
    from pipeline.invariant import find_drift
    from pipeline.models import EmailOutbox, PipelineRun

    teams = create_teams(args.pipelines, api_url, org, repos, tokens)
    for _ in range(2):
        workers.spawn()
    workers.wait_registered()
    started = time.monotonic()
    for team, repository, _ in teams:
        transitions.start_pipeline(team, [repository.pk])
    print(
        f"started {len(teams)} pipelines on 2 workers; killing one every {args.kill_every} s",
        flush=True,
    )

    kills: list[dict] = []
    drift_checks = drift_seen = awaiting_rescue_max = 0
    drift_examples: list = []
    next_kill: float | None = time.monotonic() + rng.uniform(kill_min, kill_max)
    next_check = time.monotonic() + 2
    deadline = started + args.timeout
    while time.monotonic() < deadline:
        close_old_connections()
        workers.register()
        now = time.monotonic()
        if now >= next_check:
            drift = find_drift()
            drift_checks += 1
            awaiting_rescue_max = max(awaiting_rescue_max, len(rescue.stalled_job_ids()))
            if drift:
                drift_seen += 1
                drift_examples = drift_examples or [str(d) for d in drift[:3]]
            next_check = now + 2
            running = PipelineRun.objects.filter(state=PipelineRun.State.RUNNING).count()
            unsent = EmailOutbox.objects.filter(status=EmailOutbox.Status.PENDING).count()
            if running == 0 and unsent == 0:  # the completion e-mails are jobs of their own
                break
        if next_kill is None and not workers.pending:
            # The replacement is up: the next kill comes a few seconds from now.
            next_kill = now + rng.uniform(kill_min, kill_max)
        if next_kill is not None and now >= next_kill:
            victim = rng.choice(sorted(workers.processes))
            held = held_executions(victim)
            killed_at = datetime.datetime.now(datetime.UTC)
            workers.kill(victim)
            kills.append({"worker": victim, "at": killed_at, "held": held})
            workers.spawn()
            next_kill = None
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    result = collect(teams, windows, kills, elapsed, drift_checks, drift_seen, drift_examples)
    result["awaiting_rescue_max"] = awaiting_rescue_max
    return result


def collect(teams, windows, kills, elapsed, drift_checks, drift_seen, drift_examples) -> dict:
    from django.db import connection
    from django.db.models import Count

    from pipeline.invariant import find_drift
    from pipeline.models import PipelineRun, PullRequest, StageAttempt
    from pipeline.transitions import WORKER_LOST_MESSAGE

    states = dict(
        PipelineRun.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n")
    )
    completed = states.get(PipelineRun.State.COMPLETE, 0)
    expected_prs = sum(windows.get(name, 0) for _, _, name in teams)
    pr_rows = PullRequest.objects.count()
    rows_by_team = dict(
        PullRequest.objects.values_list("team_id")
        .annotate(n=Count("id"))
        .values_list("team_id", "n")
    )
    complete_teams = set(
        PipelineRun.objects.filter(state=PipelineRun.State.COMPLETE).values_list(
            "team_id", flat=True
        )
    )
    # A completed team must hold every PR of its repository's window, once.
    missing_prs = sum(
        max(0, windows.get(name, 0) - rows_by_team.get(team.pk, 0))
        for team, _, name in teams
        if team.pk in complete_teams
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) n FROM pipeline_pullrequest"
            " GROUP BY repository_id, number HAVING count(*) > 1) d"
        )
        duplicate_prs = cursor.fetchone()[0]
    duplicate_successes = (
        StageAttempt.objects.filter(outcome=StageAttempt.Outcome.SUCCEEDED)
        .values("run_id", "stage")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    latencies, rescued = [], []
    finished_first = 0
    for kill in kills:
        for run_id, stage, job_id in kill["held"]:
            if StageAttempt.objects.filter(
                job_id=job_id, outcome=StageAttempt.Outcome.SUCCEEDED
            ).exists():
                finished_first += 1  # its hand-off committed between our look and the kill
                continue
            closed = (
                StageAttempt.objects.filter(
                    job_id=job_id, error=WORKER_LOST_MESSAGE, finished_at__gt=kill["at"]
                )
                .values_list("finished_at", flat=True)
                .first()
            )
            if closed is not None:
                rescued.append((closed - kill["at"]).total_seconds())
            again = (
                StageAttempt.objects.filter(run_id=run_id, stage=stage, started_at__gt=kill["at"])
                .order_by("started_at")
                .values_list("started_at", flat=True)
                .first()
            )
            latencies.append(None if again is None else (again - kill["at"]).total_seconds())
    final_drift = find_drift()
    return {
        "pipelines": len(teams),
        "completed": completed,
        "states": {str(k): v for k, v in states.items()},
        "elapsed_seconds": round(elapsed, 1),
        "kills": len(kills),
        "executions_killed": len(latencies),
        "executions_finished_before_the_kill": finished_first,
        "never_ran_again": sum(1 for v in latencies if v is None),
        "kill_to_running_again": [v for v in latencies if v is not None],
        "kill_to_rescued": rescued,
        "pr_rows": pr_rows,
        "pr_rows_expected": expected_prs,
        "pr_rows_missing_in_completed_teams": missing_prs,
        "duplicate_pr_rows": duplicate_prs,
        "duplicate_stage_successes": duplicate_successes,
        "drift_checks": drift_checks,
        "drift_checks_with_drift": drift_seen,
        "drift_examples": drift_examples,
        "final_drift": [str(d) for d in final_drift],
        "emails_expected": len(teams),
    }


def report(args, result: dict, log_dir: Path) -> int:
    latencies = result.pop("kill_to_running_again")
    rescued = result.pop("kill_to_rescued")
    email = result.pop("email")
    result["emails_sent"] = sum(email.values())
    result["duplicate_emails"] = sum(n - 1 for n in email.values() if n > 1)
    lost = result["pipelines"] - result["completed"]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    result.update(
        {
            "lost": lost,
            "kill_to_running_again_p50": p50,
            "kill_to_running_again_p95": p95,
            "kill_to_running_again_max": max(latencies) if latencies else None,
            "kill_to_running_again_mean": statistics.fmean(latencies) if latencies else None,
            # The rescuer superseded the dead worker's execution (its history row closed).
            "kill_to_rescued_p50": percentile(rescued, 50),
            "kill_to_rescued_p95": percentile(rescued, 95),
            "kill_to_rescued_max": max(rescued) if rescued else None,
            "target_p95_seconds": TARGET_P95_SECONDS,
            "worker_command": " ".join(WORKER_COMMAND),
            "load_average": os.getloadavg(),
            "measured_at": datetime.datetime.now(datetime.UTC).isoformat(),
            "args": vars(args),
            "worker_logs": str(log_dir),
        }
    )

    def s(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    duplicated = (
        result["duplicate_pr_rows"]
        + result["duplicate_stage_successes"]
        + result["duplicate_emails"]
    )
    print(
        f"pipelines: {result['pipelines']}, completed {result['completed']}, lost {lost}"
        f" ({result['states']}) in {result['elapsed_seconds']} s"
    )
    print(
        f"kills: {result['kills']}, stage executions killed: {result['executions_killed']}"
        f" (never ran again: {result['never_ran_again']})"
    )
    print(
        f"duplicated: PR rows {result['duplicate_pr_rows']}, stage successes"
        f" {result['duplicate_stage_successes']}, e-mails {result['duplicate_emails']}"
        f" (PR rows {result['pr_rows']} of {result['pr_rows_expected']} expected, missing in"
        f" completed teams {result['pr_rows_missing_in_completed_teams']}; e-mails sent"
        f" {result['emails_sent']} of {result['emails_expected']})"
    )
    print(
        f"drift: {result['drift_checks_with_drift']} of {result['drift_checks']} checks mid-run,"
        f" {len(result['final_drift'])} at the end; jobs awaiting rescue at once: at most"
        f" {result['awaiting_rescue_max']}"
    )
    print(
        f"kill -> running again: p50 {s(p50)}, p95 {s(p95)}, max"
        f" {s(result['kill_to_running_again_max'])} (target p95 <= {TARGET_P95_SECONDS:.0f} s;"
        f" {'met' if p95 is not None and p95 <= TARGET_P95_SECONDS else 'NOT met'})"
    )
    print(
        f"kill -> rescued (execution superseded): p50 {s(result['kill_to_rescued_p50'])}, p95"
        f" {s(result['kill_to_rescued_p95'])}, max {s(result['kill_to_rescued_max'])}"
    )
    print(f"load average: {', '.join(f'{x:.1f}' for x in result['load_average'])}")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"chaos-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written: {path.relative_to(BASE_DIR)}")
    ok = (
        lost == 0
        and duplicated == 0
        and result["pr_rows_missing_in_completed_teams"] == 0
        and result["drift_checks_with_drift"] == 0
        and not result["final_drift"]
        and p95 is not None
        and p95 <= TARGET_P95_SECONDS
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
