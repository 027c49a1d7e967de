"""bench/llm: LLM classification throughput against a local OpenAI-compatible server.

100 PRs, 300 ms latency per answer, a 429 with ``retry-after: 0.3`` on 5% of calls, the
product's client (``pipeline.llm.classify``: AsyncOpenAI, bounded concurrency, the SDK's
retries). Prints the wall time and its ratio to the ideal (PRs x latency / concurrency).
Target: ratio <= 1.5.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.llm import LLMSettings, build_request, classify  # noqa: E402
from pipeline.signatures import CommitText, PRText  # noqa: E402
from tests.fixtures.llm import FakeLLMServer  # noqa: E402


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
    args = parser.parse_args()

    server = FakeLLMServer(seed=args.seed).start()
    server.latency = args.latency
    server.rate_limit_fraction = args.rate_limited
    server.retry_after = args.retry_after
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
        server.stop()

    statuses = Counter(r.status for r in server.completions())
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
    print(f"max in flight:       {server.max_in_flight}")
    print(f"tokens:              {tokens}")
    print(f"wall time:           {wall:.2f} s")
    print(
        f"ideal:               {ideal:.2f} s ({args.prs} x {args.latency:g} s / {args.concurrency})"
    )
    print(
        f"ratio to ideal:      {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
