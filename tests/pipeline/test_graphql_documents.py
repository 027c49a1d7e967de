"""Every GraphQL document the sync sends is valid against GitHub's published schema
(/work/shared/github/schema.graphql, or the copy bundled with the demo server)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from graphql import (
    ArgumentNode,
    GraphQLSchema,
    IntValueNode,
    build_ast_schema,
    parse,
    validate,
    visit,
)
from graphql.language import Visitor

from pipeline import github_graphql

BASE_DIR = Path(__file__).resolve().parents[2]
SCHEMA_CANDIDATES = [
    BASE_DIR / "onboarding" / "demo_github" / "schema.graphql",
    Path("/work/shared/github/schema.graphql"),
]


@functools.cache
def github_schema() -> GraphQLSchema:
    path = next(p for p in SCHEMA_CANDIDATES if p.exists())
    schema = build_ast_schema(parse(path.read_text()), assume_valid_sdl=True)
    # GitHub's SDL trips graphql-core's strict deprecation rules (see SOURCE.md next to it).
    schema._validation_errors = []
    return schema


def documents() -> dict[str, str]:
    """All module-level strings of pipeline.github_graphql that are GraphQL operations: a new
    document is covered by this test without being listed here."""
    return {
        name: value
        for name, value in vars(github_graphql).items()
        if isinstance(value, str) and value.lstrip().startswith(("query", "mutation"))
    }


def test_the_module_has_documents_to_check():
    assert "PULL_REQUESTS_QUERY" in documents()


@pytest.mark.parametrize("name", sorted(documents()))
def test_document_validates_against_githubs_schema(name):
    errors = validate(github_schema(), parse(documents()[name]))

    assert [error.message for error in errors] == []


def test_an_invalid_field_is_caught_by_the_same_check():
    broken = documents()["PULL_REQUESTS_QUERY"].replace("isDraft", "isDraftt")

    errors = validate(github_schema(), parse(broken))

    assert any("isDraftt" in error.message for error in errors)


def test_pull_requests_are_asked_newest_update_first_within_githubs_page_limit():
    document = parse(documents()["PULL_REQUESTS_QUERY"])
    text = documents()["PULL_REQUESTS_QUERY"]

    assert "orderBy: {field: UPDATED_AT, direction: DESC}" in text
    assert "rateLimit" in text and "resetAt" in text
    assert github_graphql.MAX_PAGE_SIZE <= 100
    # Nested connections stay within GitHub's `first` maximum too.
    firsts: list[int] = []

    class CollectFirst(Visitor):
        def enter_argument(self, node: ArgumentNode, *args):
            if node.name.value == "first" and isinstance(node.value, IntValueNode):
                firsts.append(int(node.value.value))

    visit(document, CollectFirst())
    assert firsts and max(firsts) <= 100
