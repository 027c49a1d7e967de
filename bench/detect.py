"""bench/detect: AI detection quality on our labelled corpus, signatures only (no LLM).

Prints precision, recall and F1 overall, per family and per tool, the false-positive rate on
traps, how many review-only PRs were counted as AI, and the catalogue's coverage (tools with a
marker and a source). Writes ``bench/results/detect.json``. Targets (issue 10): precision >=
0.98 and recall >= 0.95 overall, prose-disclosure recall >= 0.8 with no trap false positive,
>= 30 tools each with a source. The same floors are enforced by
``tests/pipeline/test_detect_corpus.py``.

Also times ``detect`` over the corpus (PRs per second), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")

from pipeline.catalogue import CATALOGUE  # noqa: E402
from pipeline.signatures import detect  # noqa: E402
from tests.data.detect_corpus import (  # noqa: E402
    AI_FAMILIES,
    OVERALL_RECALL_FLOOR,
    PRECISION_FLOOR,
    RECALL_FLOORS,
    evaluate,
    load,
)

RESULTS = BENCH_DIR / "results" / "detect.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args()

    cases = load()
    report = evaluate(cases)
    started = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        for case in cases:
            detect(case.pr)
    per_second = rounds * len(cases) / (time.perf_counter() - started)
    with_source = [t for t in CATALOGUE.tools_with_markers()]
    report["catalogue"] = {
        "version": CATALOGUE.version,
        "tools": len(CATALOGUE.tools),
        "tools_with_a_sourced_marker": len(with_source),
        "markers": len(CATALOGUE.markers),
    }
    report["detect_prs_per_second"] = round(per_second)

    overall = report["overall"]
    print(
        f"catalogue {CATALOGUE.version}: {len(with_source)} tools with sourced markers, "
        f"{len(CATALOGUE.markers)} markers"
    )
    print(f"corpus: {report['prs']} PRs (tests/data/detect_corpus.jsonl), signatures only")
    print(
        f"overall   precision {overall['precision']:.3f}  recall {overall['recall']:.3f}  "
        f"F1 {overall['f1']:.3f}   (targets: P >= {PRECISION_FLOOR}, R >= {OVERALL_RECALL_FLOOR})"
    )
    print("per family:")
    for name, row in report["families"].items():
        if name in AI_FAMILIES:
            floor = RECALL_FLOORS.get(name)
            print(
                f"  {name:<14} n={row['n']:<4} precision {row['precision']:.3f}  recall "
                f"{row['recall']:.3f}  F1 {row['f1']:.3f}   (recall floor {floor})"
            )
        else:
            print(f"  {name:<14} n={row['n']:<4} false positives {row['false_positives']}")
    traps = report["traps"]
    print(
        f"traps: {traps['false_positives']} false positives of {traps['n']} "
        f"(rate {traps['fp_rate']:.3f}); review-only counted as AI: "
        f"{report['review_only_counted_as_ai']}"
    )
    print("per tool (recall on its AI-written PRs):")
    for tool, row in report["tools"].items():
        print(f"  {tool:<20} n={row['n']:<3} recall {row['recall']:.3f}")
    print(f"speed: {per_second:,.0f} PRs/s through detect()")
    for error in report["errors"]:
        print(f"  MISS {error['id']}: expected ai={error['expected']} hits={error['hits']}")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"results written to {output}")
    ok = (
        overall["precision"] >= PRECISION_FLOOR
        and overall["recall"] >= OVERALL_RECALL_FLOOR
        and all(report["families"][f]["recall"] >= floor for f, floor in RECALL_FLOORS.items())
        and traps["false_positives"] == 0
        and report["review_only_counted_as_ai"] == 0
        and len(with_source) >= 30
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
