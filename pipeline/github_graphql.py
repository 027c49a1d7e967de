"""GraphQL documents for the PR sync and the page fetcher that sends them.

Every module-level string here that starts with ``query`` is a document the code sends;
tests/pipeline/test_graphql_documents.py validates each against GitHub's published schema.

Cost: GitHub charges one point per 100 connection requests, counting nested connections once per
parent node (https://docs.github.com/en/graphql/overview/rate-limits-and-query-limits-for-the-graphql-api).
A page of 100 PRs with nested commits, reviews and labels is 1 + 3 x 100 requests: about 3
points, whatever the nested ``first`` is. So one request carries a PR's whole story; the rare PR
with more than 50 commits or reviews gets follow-up requests for the rest.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from github.Requester import Requester

from onboarding.github import GitHubError, map_exception, rate_limit_error

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100  # GitHub's limit for `first`
MIN_PAGE_SIZE = 5

PULL_REQUESTS_QUERY = """
query PullRequestsPage($owner: String!, $name: String!, $first: Int!, $after: String) {
  rateLimit {
    cost
    remaining
    resetAt
  }
  repository(owner: $owner, name: $name) {
    databaseId
    nameWithOwner
    pullRequests(first: $first, after: $after, orderBy: {field: UPDATED_AT, direction: DESC}) {
      pageInfo {
        hasNextPage
        endCursor
      }
      nodes {
        id
        number
        title
        body
        state
        isDraft
        createdAt
        updatedAt
        mergedAt
        closedAt
        additions
        deletions
        changedFiles
        headRefName
        author {
          __typename
          login
        }
        labels(first: 20) {
          nodes {
            name
          }
        }
        commits(first: 50) {
          totalCount
          pageInfo {
            hasNextPage
            endCursor
          }
          nodes {
            commit {
              oid
              message
              authoredDate
              author {
                name
                email
                user {
                  login
                }
              }
            }
          }
        }
        reviews(first: 50) {
          totalCount
          pageInfo {
            hasNextPage
            endCursor
          }
          nodes {
            id
            state
            submittedAt
            author {
              __typename
              login
            }
          }
        }
      }
    }
  }
}
"""

# The rest of a PR's commits when it has more than the page above carries (rare: long-lived
# branches). Same node shape as the nested commits, so one parser reads both.
PULL_REQUEST_COMMITS_QUERY = """
query PullRequestCommitsPage(
  $owner: String!, $name: String!, $number: Int!, $first: Int!, $after: String
) {
  rateLimit {
    cost
    remaining
    resetAt
  }
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      commits(first: $first, after: $after) {
        totalCount
        pageInfo {
          hasNextPage
          endCursor
        }
        nodes {
          commit {
            oid
            message
            authoredDate
            author {
              name
              email
              user {
                login
              }
            }
          }
        }
      }
    }
  }
}
"""

PULL_REQUEST_REVIEWS_QUERY = """
query PullRequestReviewsPage(
  $owner: String!, $name: String!, $number: Int!, $first: Int!, $after: String
) {
  rateLimit {
    cost
    remaining
    resetAt
  }
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviews(first: $first, after: $after) {
        totalCount
        pageInfo {
          hasNextPage
          endCursor
        }
        nodes {
          id
          state
          submittedAt
          author {
            __typename
            login
          }
        }
      }
    }
  }
}
"""

NESTED_QUERIES = {
    "commits": PULL_REQUEST_COMMITS_QUERY,
    "reviews": PULL_REQUEST_REVIEWS_QUERY,
}


def parse_datetime(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class RateBudget:
    """The GraphQL budget as GitHub last reported it (``rateLimit`` in every response)."""

    remaining: int | None = None
    reset_at: datetime.datetime | None = None
    last_cost: int = 1
    last_page_size: int = MAX_PAGE_SIZE
    points_used: int = 0

    def record(self, rate: dict | None, page_size: int) -> None:
        if not rate:
            return
        self.remaining = rate.get("remaining")
        self.reset_at = parse_datetime(rate.get("resetAt"))
        self.last_cost = max(1, int(rate.get("cost") or 1))
        self.last_page_size = page_size
        self.points_used += int(rate.get("cost") or 0)

    def expected_cost(self, page_size: int) -> int:
        # Cost grows with the number of parent nodes; scale the last page's cost (never below 1).
        scaled = self.last_cost * page_size / max(1, self.last_page_size)
        return max(1, int(-(-scaled // 1)))

    def allows(self, page_size: int) -> bool:
        return self.remaining is None or self.remaining >= self.expected_cost(page_size)


@dataclass
class PageSize:
    """Adaptive page size: halve on a timeout/502/504 (a big page is what GitHub fails to build
    in time), double back after a run of healthy pages. Each shrink doubles the run needed
    before the next growth, so a size that keeps failing is probed less and less often."""

    current: int = MAX_PAGE_SIZE
    healthy_streak: int = 0
    grow_after: int = 3
    shrinks: int = 0

    def shrink(self) -> None:
        self.current = max(MIN_PAGE_SIZE, self.current // 2)
        self.healthy_streak = 0
        if self.shrinks:
            self.grow_after *= 2
        self.shrinks += 1

    def healthy(self) -> None:
        self.healthy_streak += 1
        if self.healthy_streak >= self.grow_after and self.current < MAX_PAGE_SIZE:
            self.current = min(MAX_PAGE_SIZE, self.current * 2)
            self.healthy_streak = 0


@dataclass
class Page:
    nodes: list[dict]
    has_next_page: bool
    end_cursor: str | None
    repository_id: int | None


@dataclass
class FetchStats:
    requests: int = 0
    failed_requests: int = 0
    waited_seconds: float = 0.0
    pages: int = 0
    page_sizes: list[int] = field(default_factory=list)


class PullRequestPager:
    """Fetches pages of a repository's PRs (newest update first) through PyGithub's requester,
    retrying what a short wait can fix and raising GitHubError for the rest.

    Retried in-process, a few times: 502/503/504 and timeouts (with a smaller page), secondary
    rate limits (after their retry-after). Raised at once: bad credentials, not found, and the
    primary rate limit, including "the budget cannot pay for the next request" (the caller
    reschedules instead of sleeping for an hour).
    """

    def __init__(
        self,
        requester: Requester,
        *,
        budget: RateBudget | None = None,
        page_size: PageSize | None = None,
        max_attempts: int = 5,
        max_wait_seconds: float = 60.0,
        retry_base_seconds: float | None = None,
        sleep=time.sleep,
    ) -> None:
        self.requester = requester
        self.budget = budget or RateBudget()
        self.page_size = page_size or PageSize()
        self.max_attempts = max_attempts
        self.max_wait_seconds = max_wait_seconds
        if retry_base_seconds is None:
            retry_base_seconds = float(getattr(settings, "GITHUB_RETRY_BASE_SECONDS", 0.25))
        self.retry_base_seconds = retry_base_seconds
        self.sleep = sleep
        self.stats = FetchStats()

    def fetch(self, owner: str, name: str, after: str | None) -> Page:
        """One page of the repository's PRs, after ``after``."""
        variables = {"owner": owner, "name": name, "after": after}
        data, first = self._query(PULL_REQUESTS_QUERY, variables, f"{owner}/{name}")
        repository = data.get("repository")
        if repository is None:
            raise GitHubError(GitHubError.NOT_FOUND, "Not found on GitHub.", status=404)
        connection = repository["pullRequests"]
        self.stats.pages += 1
        self.stats.page_sizes.append(first)
        return Page(
            nodes=[node for node in connection.get("nodes") or [] if node],
            has_next_page=bool(connection["pageInfo"]["hasNextPage"]),
            end_cursor=connection["pageInfo"].get("endCursor"),
            repository_id=repository.get("databaseId"),
        )

    def complete_nested(self, owner: str, name: str, node: dict) -> None:
        """Fetch the rest of ``node``'s commits and reviews when the page carried only the
        first ones, appending them to the node in place."""
        for key, document in NESTED_QUERIES.items():
            nested = node.get(key) or {}
            info = nested.get("pageInfo") or {}
            while info.get("hasNextPage"):
                variables = {
                    "owner": owner,
                    "name": name,
                    "number": node["number"],
                    "after": info.get("endCursor"),
                }
                data, _ = self._query(document, variables, f"{owner}/{name}#{node['number']}")
                pull_request = (data.get("repository") or {}).get("pullRequest")
                if pull_request is None:
                    raise GitHubError(GitHubError.NOT_FOUND, "Not found on GitHub.", status=404)
                more = pull_request[key]
                nested.setdefault("nodes", []).extend(more.get("nodes") or [])
                info = more.get("pageInfo") or {}
            nested["pageInfo"] = info

    def _query(self, document: str, variables: dict, label: str) -> tuple[dict, int]:
        """Send ``document`` with ``first`` set to the current page size; returns (data, first)."""
        last_error: GitHubError | None = None
        for attempt in range(1, self.max_attempts + 1):
            first = self.page_size.current
            if not self.budget.allows(first):
                raise rate_limit_error(self.budget.reset_at)
            self.stats.requests += 1
            try:
                _headers, body = self.requester.graphql_query(
                    document, {**variables, "first": first}
                )
            except Exception as exc:
                self.stats.failed_requests += 1
                error = map_exception(exc)
                wait = self._wait_before_retry(error, attempt)
                if wait is None:
                    raise error from None
                last_error = error
                if attempt == self.max_attempts:
                    break
                logger.info(
                    "GitHub GraphQL %s for %s (attempt %s); retrying in %.1fs with first=%s",
                    error.kind,
                    label,
                    attempt,
                    wait,
                    self.page_size.current,
                )
                self.stats.waited_seconds += wait
                self.sleep(wait)
                continue
            data = body.get("data") or {}
            self.budget.record(data.get("rateLimit"), first)
            self.page_size.healthy()
            return data, first
        assert last_error is not None
        raise last_error

    def _wait_before_retry(self, error: GitHubError, attempt: int) -> float | None:
        """Seconds to wait before trying ``error``'s request again; None for what waiting
        cannot fix."""
        if error.kind in (GitHubError.SERVER, GitHubError.TIMEOUT):
            # 502/504 and timeouts are GitHub failing to build a big answer in time: ask for
            # less. A 503 is an outage, not our page size.
            if error.status in (None, 502, 504):
                self.page_size.shrink()
            return min(self.max_wait_seconds, self.retry_base_seconds * 2 ** (attempt - 1))
        if error.kind == GitHubError.SECONDARY_LIMIT:
            wait = error.retry_after if error.retry_after is not None else 60.0
            # A long wait is not worth a worker's time: the caller reschedules instead.
            return wait if wait <= self.max_wait_seconds else None
        if error.kind == GitHubError.UNREACHABLE:
            return min(self.max_wait_seconds, 2 * self.retry_base_seconds * 2 ** (attempt - 1))
        return None
