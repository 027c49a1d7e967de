"""bench/llm: LLM classification throughput against a local OpenAI-compatible server.

1. The client: 100 PRs, 300 ms latency per answer, a 429 with ``retry-after: 0.3`` on 5% of
   calls, through the product's client (``pipeline.llm.classify``: AsyncOpenAI, bounded
   concurrency, the SDK's retries). Prints the wall time and its ratio to the ideal
   (PRs x latency / concurrency). Target: ratio <= 1.5.
2. The stage (``--stage-prs``, default 2,000; 0 skips it): the real llm_processing stage on a
   scratch database of the embedded PostgreSQL (or DATABASE_URL's server): signatures for every
   PR, the LLM for the 100 most recent unsettled ones, results and progress written as they come.

The fake server runs in its own process, as a real endpoint would, so its work does not
compete with the client for this process's GIL.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
from collections import Counter
from datetime import timedelta

from scratch import BASE_DIR, create_scratch_database, drop_scratch_database, use_scratch_database

# The product's packages (pipeline, tests) are imported at module level.
sys.path.insert(0, str(BASE_DIR))

from pipeline.llm import LLMSettings, build_request, classify  # noqa: E402
from pipeline.signatures import CommitText, PRText  # noqa: E402
from tests.fixtures.llm import FakeLLMServer  # noqa: E402


class ServerProcess:
    """The fake OpenAI-compatible server in a child process; ``stop()`` returns its stats."""

    def __init__(self, args: argparse.Namespace) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        settings = (args.seed, args.latency, args.rate_limited, args.retry_after)
        self._process = context.Process(target=_serve, args=(child, settings), daemon=True)
        self._process.start()
        self.base_url: str = self._conn.recv()

    def stop(self) -> dict:
        self._conn.send("stop")
        stats = self._conn.recv()
        self._process.join(timeout=10)
        return stats


def _serve(conn, settings: tuple) -> None:
    seed, latency, rate_limited, retry_after = settings
    server = FakeLLMServer(seed=seed).start()
    server.latency = latency
    server.rate_limit_fraction = rate_limited
    server.retry_after = retry_after
    conn.send(server.base_url)
    conn.recv()
    conn.send(server.stats())
    server.stop()


def synthetic_pr(n: int) -> PRText:
    return PRText(
        title=f"Improve module {n}: handle empty input",
        body=f"Fixes #{n}. Adds a guard and a test.\n\n" + "Details. " * (20 + n % 30),
        author_login=f"dev{n % 12}",
        head_branch=f"fix/issue-{n}",
        commits=tuple(
            CommitText(message=f"Step {i} of change {n}", author_name=f"Dev {n % 12}")
            for i in range(1 + n % 4)
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--rate-limited", type=float, default=0.05, help="share of 429s")
    parser.add_argument("--retry-after", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--stage-prs", type=int, default=2000, help="0 skips the stage part")
    args = parser.parse_args()
    bench_client(args)
    if args.stage_prs:
        bench_stage(args)
    return 0


def bench_client(args: argparse.Namespace) -> None:
    print("--- client: pipeline.llm.classify")

    server = ServerProcess(args)
    config = LLMSettings(
        api_key="bench",
        base_url=server.base_url,
        model="stub-model",
        concurrency=args.concurrency,
        timeout_seconds=30,
        max_retries=3,
        request_budget=args.prs,
        token_budget=10_000_000,
    )
    requests = [build_request(n, synthetic_pr(n), config.model) for n in range(args.prs)]
    try:
        started = time.perf_counter()
        outcomes = list(classify(requests, config))
        wall = time.perf_counter() - started
    finally:
        stats = server.stop()

    statuses = Counter({int(code): n for code, n in stats["statuses"].items()})
    errors = Counter(o.error for o in outcomes if o.error)
    tokens = sum(o.prompt_tokens + o.completion_tokens for o in outcomes)
    ideal = args.prs * args.latency / args.concurrency
    ratio = wall / ideal
    print(f"PRs classified:      {sum(1 for o in outcomes if o.verdict)} of {args.prs}")
    print(f"failed:              {dict(errors) or 0}")
    print(
        f"HTTP calls:          {sum(statuses.values())} "
        f"(200: {statuses[200]}, 429: {statuses[429]}, other: "
        f"{sum(statuses.values()) - statuses[200] - statuses[429]})"
    )
    print(f"latency / retry-after: {args.latency:g} s / {args.retry_after:g} s")
    print(f"concurrency:         {args.concurrency}")
    print(f"max in flight:       {stats['max_in_flight']}")
    print(f"tokens:              {tokens}")
    print(f"wall time:           {wall:.2f} s")
    print(
        f"ideal:               {ideal:.2f} s ({args.prs} x {args.latency:g} s / {args.concurrency})"
    )
    print(
        f"ratio to ideal:      {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'})"
    )


SCRATCH_DATABASE = "tformance_bench_llm"
CLAUDE_FOOTER = "\n🤖 Generated with [Claude Code](https://claude.com/claude-code)"


def bench_stage(args: argparse.Namespace) -> None:
    print(f"--- stage: llm_processing over {args.stage_prs} PRs (scratch database)")
    use_scratch_database(create_scratch_database(SCRATCH_DATABASE))
    import django

    django.setup()
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per call otherwise
    from django.core.management import call_command
    from django.db import connections
    from django.test import override_settings
    from django.utils import timezone

    from onboarding.models import Repository, Team
    from pipeline.models import PipelineRun, PullRequest, PullRequestCommit
    from pipeline.stages import detect

    call_command("migrate", verbosity=0)
    now = timezone.now()
    team = Team.objects.create(name="bench")
    repo = Repository.objects.create(team=team, github_id=1, full_name="bench/r", selected=True)
    # Three PRs in four carry a Claude Code footer: the rest are left to the LLM.
    prs = PullRequest.objects.bulk_create(
        PullRequest(
            team=team,
            repository=repo,
            number=n,
            title=f"Change {n}",
            body=synthetic_pr(n).body + (CLAUDE_FOOTER if n % 4 else ""),
            state=PullRequest.State.MERGED,
            author_login=f"dev{n % 12}",
            head_branch=f"fix/issue-{n}",
            created_at=now - timedelta(hours=n),
            updated_at=now,
        )
        for n in range(args.stage_prs)
    )
    PullRequestCommit.objects.bulk_create(
        PullRequestCommit(pull_request=pr, sha=f"{pr.number}-{i}", message=f"Step {i}")
        for pr in prs
        for i in range(3)
    )
    run = PipelineRun.objects.create(
        team=team, stage="llm_processing", repository_ids=[repo.pk], started_at=now
    )
    server = ServerProcess(args)
    try:
        with override_settings(
            OPENAI_API_KEY="bench",
            OPENAI_BASE_URL=server.base_url,
            LLM_MODEL="stub-model",
            LLM_CONCURRENCY=args.concurrency,
        ):
            started = time.perf_counter()
            counts = detect.run(run)
            wall = time.perf_counter() - started
    finally:
        server.stop()
        connections.close_all()
        drop_scratch_database(SCRATCH_DATABASE)
    sent = counts["llm_sent"]
    print(f"counts:              {counts}")
    print(f"wall time:           {wall:.2f} s ({args.stage_prs / wall:.0f} PRs/s end to end)")
    if sent:
        ideal = sent * args.latency / args.concurrency
        print(
            f"LLM ideal:           {ideal:.2f} s ({sent} x {args.latency:g} s / {args.concurrency})"
        )
        print(f"ratio to LLM ideal:  {wall / ideal:.2f} (signatures and writes included)")


if __name__ == "__main__":
    sys.exit(main())
