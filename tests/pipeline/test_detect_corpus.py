"""The floors of issue 10 on our labelled corpus (tests/data/detect_corpus.jsonl), signatures
only: a change to the catalogue or the rules that drops a family's recall or the precision
below its floor fails the suite (bench/detect prints the same figures)."""

from __future__ import annotations

from pipeline.catalogue import CATALOGUE
from tests.data.detect_corpus import (
    OVERALL_RECALL_FLOOR,
    PRECISION_FLOOR,
    RECALL_FLOORS,
    evaluate,
    load,
)

CASES = load()
REPORT = evaluate(CASES)


def test_the_corpus_is_large_labelled_and_sourced():
    assert len(CASES) >= 300
    assert all(case.provenance.strip() for case in CASES)
    families = {case.family for case in CASES}
    for family in ("trap_person", "trap_word", "trap_sdk_bump", "trap_no_ai", "trap_quoted"):
        assert family in families
    assert {"known_tools", "other_tools", "prose", "review_only"} <= families


def test_every_catalogue_tool_is_in_the_corpus():
    in_corpus = {tool for case in CASES for tool in case.tools}
    assert set(CATALOGUE.tools_with_markers()) <= in_corpus


def test_precision_and_recall_stay_above_their_floors():
    assert REPORT["overall"]["precision"] >= PRECISION_FLOOR, REPORT["errors"]
    assert REPORT["overall"]["recall"] >= OVERALL_RECALL_FLOOR, REPORT["errors"]
    for family, floor in RECALL_FLOORS.items():
        assert REPORT["families"][family]["recall"] >= floor, (family, REPORT["errors"])


def test_no_trap_and_no_review_only_pr_is_counted_as_ai():
    assert REPORT["traps"]["false_positives"] == 0, REPORT["errors"]
    assert REPORT["review_only_counted_as_ai"] == 0, REPORT["errors"]
    assert REPORT["families"]["prose"]["false_positives"] == 0
