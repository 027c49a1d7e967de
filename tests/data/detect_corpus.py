"""The labelled detection corpus (``detect_corpus.jsonl``) and its scoring, shared by
``bench/detect`` and the floor test. Signatures only (no LLM): what a team without an LLM gets.

A PR is predicted AI-assisted when ``settles(detect(pr))``: an authorship hit. Families:
``known_tools``, ``other_tools`` and ``prose`` are AI-written (recall); ``review_only`` PRs were
only reviewed by a bot; ``trap_*``, ``mentions`` and ``human`` are not AI (false positives).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.signatures import CommitText, PRText, ReviewText, detect, settles

CORPUS_PATH = Path(__file__).with_name("detect_corpus.jsonl")
AI_FAMILIES = ("known_tools", "other_tools", "prose")
# The floors the suite enforces (issue 10's "done when").
PRECISION_FLOOR = 0.98
RECALL_FLOORS = {"known_tools": 0.95, "other_tools": 0.95, "prose": 0.80}
OVERALL_RECALL_FLOOR = 0.95


@dataclass(frozen=True)
class Case:
    id: str
    family: str
    ai: bool
    tools: tuple[str, ...]
    review_only: bool
    provenance: str
    pr: PRText


def load(path: Path = CORPUS_PATH) -> list[Case]:
    cases = []
    for line in path.read_text().splitlines():
        raw = json.loads(line)
        data = raw["pr"]
        pr = PRText(
            title=data["title"],
            body=data["body"],
            author_login=data["author_login"],
            author_is_bot=data["author_is_bot"],
            head_branch=data["head_branch"],
            commits=tuple(CommitText(**c) for c in data["commits"]),
            reviews=tuple(ReviewText(**r) for r in data["reviews"]),
        )
        cases.append(
            Case(
                raw["id"],
                raw["family"],
                raw["ai"],
                tuple(raw["tools"]),
                raw["review_only"],
                raw["provenance"],
                pr,
            )
        )
    return cases


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def evaluate(cases: list[Case]) -> dict:
    """Precision/recall/F1 overall, per family and per tool; false positives on traps."""
    tp = fp = fn = 0
    families: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "tp": 0, "fp": 0, "fn": 0})
    tools: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "found": 0})
    errors = []
    for case in cases:
        hits = detect(case.pr)
        predicted = settles(hits)
        found_tools = {h.tool for h in hits if h.kind == "authoring"}
        family = families[case.family]
        family["n"] += 1
        if case.ai and predicted:
            tp += 1
            family["tp"] += 1
        elif case.ai:
            fn += 1
            family["fn"] += 1
        elif predicted:
            fp += 1
            family["fp"] += 1
        if case.ai:
            for tool in case.tools:
                tools[tool]["n"] += 1
                tools[tool]["found"] += tool in found_tools
        if predicted != case.ai:
            errors.append({"id": case.id, "expected": case.ai, "hits": [h.as_json() for h in hits]})
    per_family = {}
    for name, f in sorted(families.items()):
        row = {"n": f["n"], "false_positives": f["fp"]}
        if name in AI_FAMILIES:
            row.update(_prf(f["tp"], f["fp"], f["fn"]))
        per_family[name] = row
    traps = [f for name, f in families.items() if name.startswith("trap_")]
    trap_n = sum(f["n"] for f in traps)
    trap_fp = sum(f["fp"] for f in traps)
    return {
        "prs": len(cases),
        "overall": {**_prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn},
        "families": per_family,
        "tools": {
            t: {"n": v["n"], "recall": round(v["found"] / v["n"], 4)}
            for t, v in sorted(tools.items())
        },
        "traps": {"n": trap_n, "false_positives": trap_fp, "fp_rate": round(trap_fp / trap_n, 4)},
        "review_only_counted_as_ai": families["review_only"]["fp"],
        "errors": errors,
    }
