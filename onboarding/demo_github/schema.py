"""GitHub's public GraphQL schema, loaded once per process.

The demo server executes queries against it, and the sync's tests validate every GraphQL document
the product sends against it, so both sides agree with the real API (provenance in SOURCE.md).
"""

from __future__ import annotations

import functools
from pathlib import Path

from graphql import GraphQLSchema, build_ast_schema, parse

SCHEMA_PATH = Path(__file__).resolve().parent / "schema.graphql"


@functools.cache
def load_schema() -> GraphQLSchema:
    """Build the schema (about a second); cached for the life of the process."""
    schema = build_ast_schema(parse(SCHEMA_PATH.read_text(encoding="utf-8")), assume_valid_sdl=True)
    # GitHub's SDL deprecates arguments that graphql-core's strict rules reject; the SDL is
    # GitHub's own and known good, so skip schema self-validation (see SOURCE.md).
    schema._validation_errors = []
    return schema
