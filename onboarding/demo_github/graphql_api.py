"""The demo server's GraphQL endpoint: GitHub's real schema, resolvers over the demo dataset.

Queries are validated and executed by graphql-core against ``schema.graphql``, so a document that
GitHub would reject is rejected here too. Resolution is table-driven: ``FIELDS`` maps
(GraphQL type, field) to a function of the source object; a field not in the table falls back to
the attribute or key of the same name, and a missing non-null value is replaced by the type's
empty value, so an unanticipated field reads as empty instead of failing the query.
Cost follows GitHub's documented rule (https://docs.github.com/en/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api):
the number of connection requests the query implies, divided by 100, at least 1.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLEnumType,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    execute,
    parse,
    validate,
    value_from_ast_untyped,
)

from onboarding.demo_github.dataset import Account, Commit, Dataset, PullRequest, Repository, Review
from onboarding.demo_github.rest import iso
from onboarding.demo_github.schema import load_schema

MAX_PAGE = 100


@dataclass
class QueryContext:
    dataset: Dataset
    web_url: str
    cost: int
    remaining: int
    reset_at: int
    limit: int
    used: int
    missing: set[str]
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ParsedQuery:
    document: DocumentNode | None
    errors: list[dict[str, Any]]
    cost: int = 1
    largest_first: int = 0  # page size: the largest first/last of an outermost connection


def parse_query(query: str, variables: dict[str, Any] | None) -> ParsedQuery:
    """Parse and validate against GitHub's schema, and work out the query's point cost."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return ParsedQuery(None, [exc.formatted])
    errors = validate(load_schema(), document)
    if errors:
        return ParsedQuery(None, [e.formatted for e in errors])
    requests, largest = _connection_requests(document, variables or {})
    return ParsedQuery(document, [], max(1, round(requests / 100)), largest)


def _connection_requests(document: DocumentNode, variables: dict[str, Any]) -> tuple[int, int]:
    """Requests the connections imply (a nested one runs once per parent item), and page size.

    The page size is the largest ``first``/``last`` of an outermost connection: what a client
    shrinks when GitHub times out, while nested sizes (commits per PR) stay put.
    """
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    total = 0
    largest = 0

    def walk(selection_set: SelectionSetNode | None, multiplier: int) -> None:
        nonlocal total, largest
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FragmentSpreadNode):
                walk(fragments[selection.name.value].selection_set, multiplier)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set, multiplier)
            elif isinstance(selection, FieldNode):
                size = None
                for argument in selection.arguments or ():
                    if argument.name.value in ("first", "last"):
                        value = value_from_ast_untyped(argument.value, variables)
                        size = value if isinstance(value, int) else None
                if size is not None:
                    total += multiplier
                    if multiplier == 1:  # an outermost connection: its size is the page size
                        largest = max(largest, size)
                    walk(selection.selection_set, multiplier * max(size, 1))
                else:
                    walk(selection.selection_set, multiplier)

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk(definition.selection_set, 1)
    return total, largest


def run_query(
    parsed: ParsedQuery, variables: dict[str, Any] | None, ctx: QueryContext
) -> dict[str, Any]:
    result = execute(
        load_schema(),
        parsed.document,
        variable_values=variables or {},
        context_value=ctx,
        field_resolver=_resolve,
        type_resolver=_type_of,
    )
    body: dict[str, Any] = {"data": result.data}
    errors = ctx.errors + [e.formatted for e in result.errors or ()]
    if errors:
        body["errors"] = errors
    return body


# Connections ------------------------------------------------------------------------------


def _cursor(offset: int) -> str:
    return base64.b64encode(f"cursor:v2:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return -1
    try:
        return int(base64.b64decode(cursor).decode().rsplit(":", 1)[1])
    except (ValueError, IndexError) as exc:
        raise GraphQLError(f"`{cursor}` does not appear to be a valid cursor.") from exc


def connection(
    items: list[Any], info: GraphQLResolveInfo, args: dict[str, Any]
) -> dict[str, Any] | None:
    """A GitHub-style cursor connection over ``items``; errors as GitHub words them."""
    first, last = args.get("first"), args.get("last")
    name = info.field_name
    if first is None and last is None:
        info.context.errors.append(
            _error(
                info,
                "MISSING_PAGINATION_BOUNDARIES",
                f"You must provide a `first` or `last` value to properly paginate the `{name}` "
                "connection.",
            )
        )
        return None
    size = first if first is not None else last
    if size > MAX_PAGE or size < 0:
        kind = "first" if first is not None else "last"
        info.context.errors.append(
            _error(
                info,
                "EXCESSIVE_PAGINATION",
                f"Requesting {size} records on the `{name}` connection exceeds the `{kind}` "
                f"limit of {MAX_PAGE} records.",
            )
        )
        return None
    start = _offset(args.get("after")) + 1
    stop = len(items)
    if args.get("before"):
        stop = min(stop, _offset(args["before"]))
    if first is not None:
        window = range(start, min(start + first, stop))
    else:
        window = range(max(start, stop - last), stop)
    nodes = [items[i] for i in window]
    return {
        "totalCount": len(items),
        "nodes": nodes,
        "edges": [{"cursor": _cursor(i), "node": items[i]} for i in window],
        "pageInfo": {
            "hasNextPage": window.stop < stop,
            "hasPreviousPage": window.start > 0,
            "startCursor": _cursor(window.start) if len(window) else None,
            "endCursor": _cursor(window.stop - 1) if len(window) else None,
        },
    }


def _error(info: GraphQLResolveInfo, kind: str, message: str) -> dict[str, Any]:
    node = info.field_nodes[0]
    location = node.loc.source.get_location(node.loc.start) if node.loc else None
    return {
        "type": kind,
        "path": list(info.path.as_list()),
        "locations": [{"line": location.line, "column": location.column}] if location else [],
        "message": message,
    }


ORDER_KEYS: dict[str, Callable[[PullRequest], Any]] = {
    "CREATED_AT": lambda pr: (pr.created_at, pr.number),
    "UPDATED_AT": lambda pr: (pr.updated_at, pr.number),
}


def _pull_requests(
    repo: Repository, info: GraphQLResolveInfo, **args: Any
) -> dict[str, Any] | None:
    dataset = info.context.dataset
    order = args.get("orderBy") or {"field": "CREATED_AT", "direction": "ASC"}
    if order["field"] == "UPDATED_AT" and order["direction"] == "DESC":
        pulls = dataset.pulls_by_updated.get(repo.name, [])  # the sync's order, precomputed
    else:
        pulls = sorted(
            dataset.pulls_by_updated.get(repo.name, []),
            key=ORDER_KEYS.get(order["field"], ORDER_KEYS["CREATED_AT"]),
            reverse=order["direction"] == "DESC",
        )
    if args.get("states"):
        states = set(args["states"])
        pulls = [pr for pr in pulls if pr.state in states]
    if args.get("labels"):
        wanted = set(args["labels"])
        pulls = [pr for pr in pulls if wanted & set(pr.labels)]
    if args.get("headRefName"):
        pulls = [pr for pr in pulls if pr.head_ref == args["headRefName"]]
    return connection(pulls, info, args)


def _pull_request(repo: Repository, info: GraphQLResolveInfo, number: int) -> PullRequest | None:
    pr = info.context.dataset.pulls_by_number.get(repo.name, {}).get(number)
    if pr is None:
        info.context.errors.append(
            _error(
                info,
                "NOT_FOUND",
                f"Could not resolve to a PullRequest with the number of {number}.",
            )
        )
    return pr


def _repository(
    _root: Any, info: GraphQLResolveInfo, owner: str, name: str, **_: Any
) -> Repository | None:
    ctx: QueryContext = info.context
    repo = ctx.dataset.repository(owner, name)
    if repo is None or repo.full_name.lower() in ctx.missing:
        ctx.errors.append(
            _error(
                info,
                "NOT_FOUND",
                f"Could not resolve to a Repository with the name '{owner}/{name}'.",
            )
        )
        return None
    return repo


def _rate_limit(_root: Any, info: GraphQLResolveInfo, **_: Any) -> dict[str, Any]:
    ctx: QueryContext = info.context
    return {
        "cost": ctx.cost,
        "limit": ctx.limit,
        "remaining": ctx.remaining,
        "used": ctx.used,
        "resetAt": datetime.fromtimestamp(ctx.reset_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nodeCount": 0,
    }


def _commit_author(commit: Commit, info: GraphQLResolveInfo) -> dict[str, Any]:
    user = info.context.dataset.people.get(commit.author_login) if commit.author_login else None
    return {
        "name": commit.author_name,
        "email": commit.author_email,
        "date": iso(commit.authored_date),
        "user": user,
    }


CO_AUTHOR = re.compile(r"^co-authored-by:\s*(?P<name>.+?)\s*<(?P<email>[^>]+)>\s*$", re.I | re.M)


def _commit_authors(commit: Commit, info: GraphQLResolveInfo) -> list[dict[str, Any]]:
    """The author, then each ``Co-authored-by`` trailer, as GitHub's ``Commit.authors`` lists."""
    people = info.context.dataset.people
    by_email = {person.email: person for person in people.values()}
    authors = [_commit_author(commit, info)]
    for match in CO_AUTHOR.finditer(commit.message):
        email = match["email"]
        login = email.split("+", 1)[1].split("@", 1)[0] if "+" in email else None
        user = by_email.get(email) or (people.get(login) if login else None)
        date = iso(commit.authored_date)
        authors.append({"name": match["name"], "email": email, "date": date, "user": user})
    return authors


def _repositories(owner: Account, info: GraphQLResolveInfo, **args: Any) -> dict[str, Any] | None:
    ctx: QueryContext = info.context
    dataset = ctx.dataset
    repos = dataset.repositories if owner is dataset.org else dataset.personal_repositories
    if owner is dataset.viewer and args.get("ownerAffiliations") != ["OWNER"]:
        repos = dataset.personal_repositories + dataset.repositories  # member of the org too
    return connection([r for r in repos if r.full_name.lower() not in ctx.missing], info, args)


def _owner_of(repo: Repository, info: GraphQLResolveInfo) -> Account:
    dataset = info.context.dataset
    return dataset.org if repo.owner == dataset.org.login else dataset.viewer


def _web(info: GraphQLResolveInfo, path: str) -> str:
    return f"{info.context.web_url}/{path}"


FIELDS: dict[tuple[str, str], Callable[..., Any]] = {
    ("Query", "viewer"): lambda _r, info, **_: info.context.dataset.viewer,
    ("Query", "rateLimit"): _rate_limit,
    ("Query", "repository"): _repository,
    ("Query", "node"): lambda _r, info, id, **_: info.context.dataset.by_node_id.get(id),
    ("Query", "organization"): lambda _r, info, login, **_: (
        info.context.dataset.org if login.lower() == info.context.dataset.org.login else None
    ),
    ("Repository", "id"): lambda r, _i, **_: r.node_id,
    ("Repository", "databaseId"): lambda r, _i, **_: r.database_id,
    ("Repository", "nameWithOwner"): lambda r, _i, **_: r.full_name,
    ("Repository", "isPrivate"): lambda r, _i, **_: r.private,
    ("Repository", "owner"): _owner_of,
    ("Repository", "url"): lambda r, info, **_: _web(info, r.full_name),
    ("Repository", "createdAt"): lambda r, _i, **_: iso(r.created_at),
    ("Repository", "pushedAt"): lambda r, _i, **_: iso(r.pushed_at),
    ("Repository", "pullRequests"): _pull_requests,
    ("Repository", "pullRequest"): _pull_request,
    ("PullRequest", "id"): lambda pr, _i, **_: pr.node_id,
    ("PullRequest", "databaseId"): lambda pr, _i, **_: pr.database_id,
    ("PullRequest", "isDraft"): lambda pr, _i, **_: pr.is_draft,
    ("PullRequest", "createdAt"): lambda pr, _i, **_: iso(pr.created_at),
    ("PullRequest", "updatedAt"): lambda pr, _i, **_: iso(pr.updated_at),
    ("PullRequest", "mergedAt"): lambda pr, _i, **_: iso(pr.merged_at),
    ("PullRequest", "closedAt"): lambda pr, _i, **_: iso(pr.closed_at),
    ("PullRequest", "merged"): lambda pr, _i, **_: pr.merged_at is not None,
    ("PullRequest", "closed"): lambda pr, _i, **_: pr.closed_at is not None,
    ("PullRequest", "changedFiles"): lambda pr, _i, **_: pr.changed_files,
    ("PullRequest", "headRefName"): lambda pr, _i, **_: pr.head_ref,
    ("PullRequest", "baseRefName"): lambda pr, _i, **_: pr.repository.default_branch,
    ("PullRequest", "bodyText"): lambda pr, _i, **_: pr.body,
    ("PullRequest", "url"): lambda pr, info, **_: _web(
        info, f"{pr.repository.full_name}/pull/{pr.number}"
    ),
    ("PullRequest", "repository"): lambda pr, _i, **_: pr.repository,
    ("PullRequest", "labels"): lambda pr, info, **args: connection(
        [{"name": name} for name in pr.labels], info, args
    ),
    ("PullRequest", "commits"): lambda pr, info, **args: connection(pr.commits, info, args),
    ("PullRequest", "reviews"): lambda pr, info, **args: connection(
        [r for r in pr.reviews if not args.get("states") or r.state in args["states"]], info, args
    ),
    ("PullRequestCommit", "commit"): lambda commit, _i, **_: commit,
    ("PullRequestCommit", "id"): lambda commit, _i, **_: f"PURC_{commit.oid[:20]}",
    ("Commit", "id"): lambda c, _i, **_: f"C_{c.oid}",
    ("Commit", "authoredDate"): lambda c, _i, **_: iso(c.authored_date),
    ("Commit", "committedDate"): lambda c, _i, **_: iso(c.authored_date),
    ("Commit", "messageHeadline"): lambda c, _i, **_: c.message.split("\n", 1)[0],
    ("Commit", "messageBody"): lambda c, _i, **_: c.message.partition("\n")[2].strip("\n"),
    ("Commit", "author"): _commit_author,
    ("Commit", "committer"): _commit_author,
    ("Commit", "authors"): lambda c, info, **args: connection(_commit_authors(c, info), info, args),
    ("PullRequestReview", "id"): lambda r, _i, **_: r.node_id,
    ("PullRequestReview", "databaseId"): lambda r, _i, **_: r.database_id,
    ("PullRequestReview", "submittedAt"): lambda r, _i, **_: iso(r.submitted_at),
    ("PullRequestReview", "createdAt"): lambda r, _i, **_: iso(r.submitted_at),
}
for _type in ("User", "Bot", "Organization"):
    FIELDS[(_type, "id")] = lambda a, _i, **_: a.node_id
    FIELDS[(_type, "databaseId")] = lambda a, _i, **_: a.database_id
    FIELDS[(_type, "createdAt")] = lambda a, _i, **_: iso(a.created_at)
    FIELDS[(_type, "url")] = lambda a, info, **_: _web(info, a.rest_login)
    FIELDS[(_type, "avatarUrl")] = lambda a, info, **_: _web(info, f"avatars/{a.database_id}")
    FIELDS[(_type, "repositories")] = _repositories


def _resolve(source: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    resolver = FIELDS.get((info.parent_type.name, info.field_name))
    if resolver is not None:
        value = resolver(source, info, **args)
    elif isinstance(source, dict):
        value = source.get(info.field_name)
    else:
        value = getattr(source, info.field_name, None)
        if callable(value):
            value = None
    if value is None and isinstance(info.return_type, GraphQLNonNull):
        return _empty(info.return_type.of_type)
    return value


def _empty(graphql_type: Any) -> Any:
    """The empty value of a non-null type this demo does not model."""
    if isinstance(graphql_type, GraphQLList):
        return []
    if isinstance(graphql_type, GraphQLEnumType):
        return next(iter(graphql_type.values.values())).value
    if isinstance(graphql_type, GraphQLScalarType):
        return {"Int": 0, "Float": 0.0, "Boolean": False}.get(graphql_type.name, "")
    if isinstance(graphql_type, GraphQLObjectType):
        return {}
    return None


def _type_of(value: Any, _info: GraphQLResolveInfo, _abstract: Any) -> str | None:
    if isinstance(value, Account):
        if value.is_bot:
            return "Bot"
        return "Organization" if value.node_id.startswith("O_") else "User"
    if isinstance(value, PullRequest):
        return "PullRequest"
    if isinstance(value, Review):
        return "PullRequestReview"
    if isinstance(value, Repository):
        return "Repository"
    if isinstance(value, Commit):
        return "Commit"
    return None
