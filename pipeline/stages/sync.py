"""The sync stage: each selected repository's pull requests of the last SYNC_WINDOW_DAYS, with
their commits and reviews, fetched through GitHub's GraphQL API and upserted page by page.

- Pages come newest update first; the stage stops at the first PR updated before the window.
- Each page is one transaction of bulk upserts keyed by (repository, number), (pull request,
  sha) and (pull request, review node id): re-running the stage, or a later run, never
  duplicates anything and updates what changed. The first PRs are visible after the first page.
- Memory holds one page at a time, whatever the size of the history.
- A nightly run stops at the last successful sync of each repository instead (incremental).
- When GitHub's GraphQL budget cannot pay for the next page, the stage raises RescheduleStage
  for the reset time (a worker does not sleep for an hour). Finished repositories are recorded
  in ``run.progress`` and skipped on resume; the interrupted repository starts again from its
  newest PR, since PRs updated during the pause move to the front of the ordering and a saved
  cursor would miss them.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re

from django.db import connection, transaction
from django.utils import timezone

from onboarding.github import BROKEN_CONNECTION_MESSAGE, GitHubError, client_for
from onboarding.models import GitHubConnection, Repository
from pipeline import scope, signals
from pipeline.errors import RescheduleStage, StageError
from pipeline.github_graphql import PageSize, PullRequestPager, parse_datetime
from pipeline.models import (
    PipelineRun,
    PullRequest,
    PullRequestCommit,
    PullRequestReview,
    RunKind,
)
from pipeline.progress import report

logger = logging.getLogger(__name__)

# "Co-authored-by: Name <email>" trailers (https://docs.github.com/en/pull-requests/committing-
# changes-to-your-project/creating-and-editing-commits/creating-a-commit-with-multiple-authors).
CO_AUTHOR_TRAILER = re.compile(
    r"^[ \t]*co-authored-by:[ \t]*(?P<name>[^<\n]*?)[ \t]*<(?P<email>[^>\n]*)>[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)

PR_UPDATE_FIELDS = [
    "team",
    "node_id",
    "title",
    "body",
    "state",
    "is_draft",
    "author_login",
    "author_is_bot",
    "head_branch",
    "labels",
    "created_at",
    "updated_at",
    "merged_at",
    "closed_at",
    "first_review_at",
    "additions",
    "deletions",
    "changed_files",
    "review_rounds",
    "is_revert",
    "synced_at",
]
COMMIT_UPDATE_FIELDS = [
    "message",
    "authored_at",
    "author_name",
    "author_email",
    "author_login",
    "co_authors",
]
REVIEW_UPDATE_FIELDS = ["state", "submitted_at", "reviewer_login", "reviewer_is_bot"]

# Failures that concern one repository only: it is skipped (and reported), the others synced.
SKIP_REASONS = {
    GitHubError.NOT_FOUND: "not found",
    GitHubError.FORBIDDEN: "access denied (the organisation may require SSO authorisation)",
}

# A nightly run's first page per repository (it grows to GitHub's 100 while pages are full).
NIGHTLY_FIRST_PAGE_SIZE = 10

# Keys of run.progress this stage owns besides the displayed counters.
DONE_KEY = "synced_repository_ids"
PRS_BY_REPOSITORY_KEY = "prs_by_repository"


def run(run: PipelineRun) -> dict:
    connection = GitHubConnection.objects.filter(team_id=run.team_id).first()
    try:
        client = client_for(connection, rest_retries=False) if connection else None
    except GitHubError:
        client = None
    if client is None:
        raise StageError(BROKEN_CONNECTION_MESSAGE, retryable=False)

    repositories = list(
        Repository.objects.filter(team_id=run.team_id, pk__in=run.repository_ids).order_by(
            "full_name"
        )
    )
    progress = run.progress or {}
    done: list[int] = list(progress.get(DONE_KEY) or [])
    prs_by_repository: dict[str, int] = dict(progress.get(PRS_BY_REPOSITORY_KEY) or {})
    # The run's window (pipeline.scope), fixed at its start: a retry hours later, the later
    # stages and the dashboard all count from the same moment.
    since = scope.window_start(run)
    pager = PullRequestPager(client.requester)
    report(
        run,
        repositories_total=len(run.repository_ids),
        repositories_done=len(done),
        prs_synced=sum(prs_by_repository.values()),
    )

    missing = set(run.repository_ids) - {repo.pk for repo in repositories} - set(done)
    for repository_id in sorted(missing):
        # Deleted from the team since the run started: nothing to fetch.
        _record_skip(run, repository_id, f"repository {repository_id}", "removed")
        done.append(repository_id)

    for repository in repositories:
        if repository.pk in done:
            continue
        started = timezone.now()
        try:
            synced = _sync_repository(
                run, repository, pager, _since(run, repository, since), prs_by_repository
            )
        except GitHubError as error:
            reason = SKIP_REASONS.get(error.kind)
            if reason is None:
                raise _stage_error(error, pager) from None
            logger.info("repository %s skipped: %s", repository.full_name, reason)
            _record_skip(run, repository.pk, repository.full_name, reason)
        else:
            prs_by_repository[str(repository.pk)] = synced
            _finish_repository(run, repository, started, synced)
        done.append(repository.pk)
        report(
            run,
            repositories_done=len(done),
            prs_synced=sum(prs_by_repository.values()),
            current_repository="",
            **{DONE_KEY: done, PRS_BY_REPOSITORY_KEY: prs_by_repository},
        )

    run.refresh_from_db(fields=["summary"])
    skipped = len((run.summary or {}).get("skipped_repositories", []))
    return {
        "repositories_synced": len(done) - skipped,
        "repositories_skipped": skipped,
        "prs_synced": sum(prs_by_repository.values()),
        "graphql_requests": pager.stats.requests,
        "graphql_points": pager.budget.points_used,
    }


def _since(run: PipelineRun, repository: Repository, window_start: datetime.datetime):
    """Where a repository's sync stops. Onboarding takes the whole window; a nightly run only
    what was updated since the repository's last successful sync began (``last_synced_at`` is
    that start, so a PR updated while it ran is fetched again, never missed)."""
    if run.kind == RunKind.NIGHTLY and repository.last_synced_at is not None:
        return max(window_start, repository.last_synced_at)
    return window_start


def _stage_error(error: GitHubError, pager: PullRequestPager) -> Exception:
    """What the engine should do with a GitHub failure the pager could not absorb."""
    if error.kind == GitHubError.RATE_LIMITED:
        return _reschedule(error.reset_at or pager.budget.reset_at)
    if error.kind == GitHubError.SECONDARY_LIMIT and (error.retry_after or 0) > (
        pager.max_wait_seconds
    ):
        return _reschedule(error.reset_at)
    if error.kind == GitHubError.AUTH:
        # The boundary's own words: a rejected token, or a connection that cannot be read.
        return StageError(error.user_message, retryable=False)
    if error.kind in (
        GitHubError.SERVER,
        GitHubError.TIMEOUT,
        GitHubError.UNREACHABLE,
        GitHubError.SECONDARY_LIMIT,
    ):
        return StageError(error.user_message, retryable=True)
    return StageError(error.user_message, retryable=False)


# Without a reset time (an answer that named none), wait this long rather than a few seconds:
# a spent budget is not back in five seconds, and every reschedule costs a job.
UNKNOWN_RESET_WAIT = datetime.timedelta(seconds=60)


def _reschedule(reset_at: datetime.datetime | None) -> RescheduleStage:
    now = timezone.now()
    if reset_at is None:
        reset_at = now + UNKNOWN_RESET_WAIT
    # A few seconds past the reset: GitHub's clock and ours are not the same clock.
    at = max(reset_at, now) + datetime.timedelta(seconds=5)
    return RescheduleStage(
        at=at, reason=f"GitHub rate limit reached; continuing after {at:%H:%M} UTC."
    )


def _sync_repository(
    run: PipelineRun,
    repository: Repository,
    pager: PullRequestPager,
    since: datetime.datetime,
    prs_by_repository: dict[str, int],
) -> int:
    owner, _, name = repository.full_name.partition("/")
    if run.kind == RunKind.NIGHTLY and repository.last_synced_at is not None:
        # Few PRs change overnight: ask for a small first page (the stop at the last sync is
        # usually on it) and double while pages come back full of changes.
        pager.page_size = PageSize(current=NIGHTLY_FIRST_PAGE_SIZE, grow_after=1)
    before = sum(prs_by_repository.values()) - prs_by_repository.get(str(repository.pk), 0)
    synced = 0
    cursor: str | None = None
    report(run, current_repository=repository.full_name)
    while True:
        page = pager.fetch(owner, name, cursor)
        in_window = [
            node for node in page.nodes if (parse_datetime(node["updatedAt"]) or since) >= since
        ]
        for node in in_window:
            pager.complete_nested(owner, name, node)
        synced += save_page(run, repository, in_window)
        report(run, prs_synced=before + synced)
        if len(in_window) < len(page.nodes) or not page.has_next_page:
            return synced
        cursor = page.end_cursor


def _finish_repository(
    run: PipelineRun, repository: Repository, started: datetime.datetime, synced: int
) -> None:
    with transaction.atomic():
        Repository.objects.filter(pk=repository.pk).update(last_synced_at=started)
        transaction.on_commit(
            functools.partial(
                signals.repository_sync_completed.send,
                sender=Repository,
                team_id=run.team_id,
                run_id=run.pk,
                repository_id=repository.pk,
                full_name=repository.full_name,
                prs_synced=synced,
            )
        )


def _record_skip(run: PipelineRun, repository_id: int, full_name: str, reason: str) -> None:
    with transaction.atomic():
        locked = PipelineRun.objects.select_for_update().get(pk=run.pk)
        summary = dict(locked.summary or {})
        skipped = [
            s for s in summary.get("skipped_repositories", []) if s.get("id") != repository_id
        ]
        skipped.append({"id": repository_id, "full_name": full_name, "reason": reason})
        summary["skipped_repositories"] = skipped
        PipelineRun.objects.filter(pk=run.pk).update(summary=summary)
    run.summary = summary


# --- GraphQL nodes to rows -----------------------------------------------------------------


def _actor(actor: dict | None) -> tuple[str, bool]:
    """(login, is_bot) of a GraphQL Actor. GraphQL gives bots' logins without REST's "[bot]"
    suffix; we store the REST form, which is how the AI markers name them."""
    if not actor:
        return "ghost", False  # deleted accounts: GitHub shows them as "ghost"
    login = actor.get("login") or ""
    is_bot = actor.get("__typename") == "Bot" or login.endswith("[bot]")
    if is_bot and not login.endswith("[bot]"):
        login = f"{login}[bot]"
    return login, is_bot


def parse_co_authors(message: str) -> list[dict[str, str]]:
    return [
        {"name": match["name"].strip(), "email": match["email"].strip()}
        for match in CO_AUTHOR_TRAILER.finditer(message or "")
    ]


def pull_request_row(run: PipelineRun, repository: Repository, node: dict) -> PullRequest:
    author_login, author_is_bot = _actor(node.get("author"))
    reviews = [r for r in (node.get("reviews") or {}).get("nodes") or [] if r]
    # First review: the earliest submitted review by someone other than the author and not by
    # a bot (an instant bot comment is not a human picking the PR up).
    human_reviews = []
    for review in reviews:
        login, is_bot = _actor(review.get("author"))
        submitted = parse_datetime(review.get("submittedAt"))
        if submitted and not is_bot and login != author_login:
            human_reviews.append(submitted)
    title = node.get("title") or ""
    return PullRequest(
        team_id=run.team_id,
        repository=repository,
        number=node["number"],
        node_id=node.get("id") or "",
        title=title,
        body=node.get("body") or "",
        state=(node.get("state") or "open").lower(),
        is_draft=bool(node.get("isDraft")),
        author_login=author_login,
        author_is_bot=author_is_bot,
        head_branch=node.get("headRefName") or "",
        labels=[label["name"] for label in (node.get("labels") or {}).get("nodes") or [] if label],
        created_at=parse_datetime(node["createdAt"]),
        updated_at=parse_datetime(node["updatedAt"]),
        merged_at=parse_datetime(node.get("mergedAt")),
        closed_at=parse_datetime(node.get("closedAt")),
        first_review_at=min(human_reviews, default=None),
        additions=node.get("additions") or 0,
        deletions=node.get("deletions") or 0,
        changed_files=node.get("changedFiles") or 0,
        review_rounds=sum(1 for r in reviews if r.get("state") == "CHANGES_REQUESTED"),
        is_revert=title.startswith("Revert "),
    )


def _commit_rows(pull_request_id: int, node: dict) -> dict[str, PullRequestCommit]:
    rows: dict[str, PullRequestCommit] = {}
    for item in (node.get("commits") or {}).get("nodes") or []:
        commit = (item or {}).get("commit")
        if not commit:
            continue
        author = commit.get("author") or {}
        message = commit.get("message") or ""
        rows[commit["oid"]] = PullRequestCommit(
            pull_request_id=pull_request_id,
            sha=commit["oid"],
            message=message,
            authored_at=parse_datetime(commit.get("authoredDate")),
            author_name=author.get("name") or "",
            author_email=author.get("email") or "",
            author_login=((author.get("user") or {}).get("login")) or "",
            co_authors=parse_co_authors(message),
        )
    return rows


def _review_rows(pull_request_id: int, node: dict) -> dict[str, PullRequestReview]:
    rows: dict[str, PullRequestReview] = {}
    for review in (node.get("reviews") or {}).get("nodes") or []:
        if not review:
            continue
        login, is_bot = _actor(review.get("author"))
        rows[review["id"]] = PullRequestReview(
            pull_request_id=pull_request_id,
            node_id=review["id"],
            state=review.get("state") or "",
            submitted_at=parse_datetime(review.get("submittedAt")),
            reviewer_login=login,
            reviewer_is_bot=is_bot,
        )
    return rows


def save_page(run: PipelineRun, repository: Repository, nodes: list[dict]) -> int:
    """Upsert one page of PR nodes with their commits and reviews in one transaction; returns
    the number of PRs written."""
    # One row per number: "ON CONFLICT DO UPDATE" cannot touch a row twice in one statement.
    by_number = {node["number"]: node for node in nodes}
    if not by_number:
        return 0
    pull_requests = [pull_request_row(run, repository, node) for node in by_number.values()]
    with transaction.atomic():
        saved = PullRequest.objects.bulk_create(
            pull_requests,
            update_conflicts=True,
            unique_fields=["repository", "number"],
            update_fields=PR_UPDATE_FIELDS,
        )
        commits: dict[tuple[int, str], PullRequestCommit] = {}
        reviews: dict[tuple[int, str], PullRequestReview] = {}
        for pull_request in saved:
            node = by_number[pull_request.number]
            for sha, row in _commit_rows(pull_request.pk, node).items():
                commits[(pull_request.pk, sha)] = row
            for node_id, row in _review_rows(pull_request.pk, node).items():
                reviews[(pull_request.pk, node_id)] = row
        if commits:
            PullRequestCommit.objects.bulk_create(
                list(commits.values()),
                update_conflicts=True,
                unique_fields=["pull_request", "sha"],
                update_fields=COMMIT_UPDATE_FIELDS,
            )
        complete = [
            pr.pk
            for pr in saved
            if not ((by_number[pr.number].get("commits") or {}).get("pageInfo") or {}).get(
                "hasNextPage", True
            )
        ]
        _delete_vanished_commits(complete, list(commits))
        if reviews:
            PullRequestReview.objects.bulk_create(
                list(reviews.values()),
                update_conflicts=True,
                unique_fields=["pull_request", "node_id"],
                update_fields=REVIEW_UPDATE_FIELDS,
            )
    return len(saved)


def _delete_vanished_commits(pull_request_ids: list[int], kept: list[tuple[int, str]]) -> None:
    """A force-push rewrites a PR's commits: drop the stored commits of these PRs (whose commit
    lists were fetched whole) that GitHub no longer lists. One statement per page."""
    if not pull_request_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {PullRequestCommit._meta.db_table} AS stored
            WHERE stored.pull_request_id = ANY(%s)
              AND NOT EXISTS (
                SELECT 1 FROM unnest(%s::bigint[], %s::text[]) AS kept(pull_request_id, sha)
                WHERE kept.pull_request_id = stored.pull_request_id AND kept.sha = stored.sha
              )
            """,
            [pull_request_ids, [pk for pk, _ in kept], [sha for _, sha in kept]],
        )
