"""The PyGithub boundary: clients on the connection's base URL, token checks, repository
listing, and one error type whose message a user can act on.

The base URL is the connection's ``api_url`` (``settings.GITHUB_API_URL`` by default), so
github.com, GitHub Enterprise (``https://host/api/v3``) and the bundled demo server all work
unchanged: PyGithub derives the GraphQL endpoint from it (``/api/v3`` -> ``/api/graphql``).
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass

import github
import requests
from django.conf import settings
from django.db import transaction
from github import Auth, Github, GithubException
from urllib3.util.retry import Retry

from onboarding.crypto import TokenUnreadable
from onboarding.models import GitHubConnection, Repository, Team

logger = logging.getLogger(__name__)

# GitHub tokens (ghp_, github_pat_, gho_, OAuth and Enterprise ones) are printable ASCII
# without spaces.
TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")

# Every message a user can only act on by connecting GitHub again contains RECONNECT: the
# progress page and the repository list then link to the connection page (needs_reconnect).
RECONNECT = "reconnect GitHub"
BROKEN_CONNECTION_MESSAGE = f"GitHub connection is broken: {RECONNECT}."
# A 401 from GitHub while the team's stored token is used (revoked, expired).
TOKEN_REJECTED_MESSAGE = f"GitHub rejected the team's token (bad credentials): {RECONNECT}."
# A 401 (or a malformed token) while a user is checking a token they just entered.
ENTERED_TOKEN_REJECTED_MESSAGE = (
    "GitHub rejected this token (bad credentials). Check that you copied all of it and that "
    "it has not expired or been revoked."
)
UNREACHABLE_MESSAGE = "GitHub could not be reached (network error); try again in a moment."
SERVER_ERROR_MESSAGE = "GitHub had an error; try again."
FORBIDDEN_MESSAGE = (
    "GitHub denied access; the organisation may require this token to be authorised for SSO."
)


class GitHubError(Exception):
    """A GitHub failure, with a message for users (never a token, never a stack trace).

    ``kind`` says what the caller can do about it: AUTH (reconnect, do not retry), RATE_LIMITED
    (wait until ``reset_at``), SECONDARY_LIMIT (wait ``retry_after`` seconds), UNREACHABLE and
    SERVER (retry later), NOT_FOUND, OTHER.
    """

    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    SECONDARY_LIMIT = "secondary_limit"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    SERVER = "server"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    OTHER = "other"

    def __init__(
        self,
        kind: str,
        user_message: str,
        *,
        status: int | None = None,
        reset_at: datetime.datetime | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message
        self.status = status
        self.reset_at = reset_at
        self.retry_after = retry_after


@dataclass(frozen=True)
class RepositoryInfo:
    github_id: int
    full_name: str
    private: bool
    default_branch: str
    description: str
    updated_at: datetime.datetime | None


def timeout_seconds() -> float:
    return float(getattr(settings, "GITHUB_TIMEOUT_SECONDS", 20))


def make_client(
    token: str, api_url: str | None = None, *, rest_retries: bool = True, per_page: int = 100
) -> Github:
    """A PyGithub client on ``api_url`` with our own retry and pacing policy.

    PyGithub's default ``GithubRetry`` sleeps until the rate-limit reset (up to an hour) inside
    the calling process; we want a worker freed instead, so only connection errors and 502/503/504
    are retried here, briefly, and rate limits surface as GitHubError. ``rest_retries=False``
    turns even that off for callers that run their own loop (the GraphQL sync adapts its page
    size on 502/504). PyGithub also paces requests by default (0.25 s between requests, 1 s
    between "writes", which includes every GraphQL POST); our calls are sequential reads, so that
    pacing would only slow the sync down.
    """
    retry: Retry | None = None
    if rest_retries:
        retry = Retry(
            total=2,
            connect=2,
            read=0,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset({"GET"}),
            backoff_factor=0.3,
            respect_retry_after_header=False,  # a long Retry-After must not block the caller
            raise_on_status=False,  # hand the last 5xx to PyGithub, which raises it
        )
    return Github(
        auth=Auth.Token(token),
        base_url=(api_url or settings.GITHUB_API_URL).rstrip("/"),
        # PyGithub 2.10 asserts an int timeout (github/MainClass.py), though requests takes floats.
        timeout=max(1, round(timeout_seconds())),
        retry=retry,
        per_page=per_page,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


def _header(headers: dict | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _reset_time(headers: dict | None) -> datetime.datetime | None:
    raw = _header(headers, "x-ratelimit-reset")
    try:
        return datetime.datetime.fromtimestamp(int(raw), tz=datetime.UTC) if raw else None
    except (TypeError, ValueError, OverflowError):
        return None


def _retry_after(headers: dict | None) -> float | None:
    raw = _header(headers, "retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def rate_limited_message(reset_at: datetime.datetime | None) -> str:
    if reset_at is None:
        return "GitHub rate limit reached; try again later."
    return f"GitHub rate limit reached; try again after {reset_at:%H:%M} UTC."


def rate_limit_error(reset_at: datetime.datetime | None, status: int | None = None) -> GitHubError:
    return GitHubError(
        GitHubError.RATE_LIMITED, rate_limited_message(reset_at), status=status, reset_at=reset_at
    )


def map_exception(exc: BaseException) -> GitHubError:
    """The GitHubError for an exception raised by PyGithub, requests or our token decryption."""
    if isinstance(exc, GitHubError):
        return exc
    if isinstance(exc, TokenUnreadable):
        return GitHubError(GitHubError.AUTH, BROKEN_CONNECTION_MESSAGE)
    if isinstance(exc, requests.exceptions.InvalidHeader | UnicodeError):
        # Only the token goes into a header we build: a token no HTTP header can carry.
        return GitHubError(GitHubError.AUTH, TOKEN_REJECTED_MESSAGE)
    if isinstance(exc, requests.exceptions.Timeout):
        return GitHubError(GitHubError.TIMEOUT, "GitHub took too long to answer; try again.")
    if isinstance(exc, requests.exceptions.RequestException):
        return GitHubError(GitHubError.UNREACHABLE, UNREACHABLE_MESSAGE)
    if isinstance(exc, GithubException):
        return _map_github_exception(exc)
    return GitHubError(GitHubError.OTHER, "Something went wrong while talking to GitHub.")


def _map_github_exception(exc: GithubException) -> GitHubError:
    status = exc.status
    headers = exc.headers
    message = (exc.message or "").lower()
    if status == 401 or isinstance(exc, github.BadCredentialsException):
        return GitHubError(GitHubError.AUTH, TOKEN_REJECTED_MESSAGE, status=status)
    # GraphQL answers a spent budget with HTTP 200 and an error of type RATE_LIMITED; PyGithub
    # turns any GraphQL error into a GithubException(400) carrying the response.
    graphql_errors = exc.data.get("errors") if isinstance(exc.data, dict) else None
    if not isinstance(graphql_errors, list):
        graphql_errors = None
    error_types = {
        e.get("type") for e in graphql_errors or () if isinstance(e, dict) and e.get("type")
    }
    if "RATE_LIMITED" in error_types:
        return rate_limit_error(_reset_time(headers), status)
    # An organisation's SAML enforcement (or a token without access) answers FORBIDDEN with the
    # data left null (https://docs.github.com/en/graphql/guides/forming-calls-with-graphql).
    if "FORBIDDEN" in error_types:
        return GitHubError(GitHubError.FORBIDDEN, FORBIDDEN_MESSAGE, status=status)
    # A query GitHub could not finish in time answers HTTP 200 with an untyped error ("Something
    # went wrong while executing your query. This may be the result of a timeout..."): that is a
    # server-side failure to retry with a smaller page, not a refusal of the request.
    # No HTTP status of its own (PyGithub reports 400 for any GraphQL error): None lets the pager
    # treat it like a 502/504, shrinking the page.
    if graphql_errors and _is_graphql_server_failure(graphql_errors, error_types):
        return GitHubError(GitHubError.SERVER, SERVER_ERROR_MESSAGE, status=None)
    if status in (403, 429):
        remaining = _header(headers, "x-ratelimit-remaining")
        retry_after = _retry_after(headers)
        # Primary limit: the hourly budget is spent; it comes back at x-ratelimit-reset
        # (https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api).
        if remaining == "0" and retry_after is None:
            reset_at = _reset_time(headers)
            return rate_limit_error(reset_at, status)
        # Secondary limit: wait retry-after seconds, or a minute when the header is missing.
        if retry_after is not None or "secondary rate limit" in message or status == 429:
            wait = retry_after if retry_after is not None else 60.0
            reset_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=wait)
            return GitHubError(
                GitHubError.SECONDARY_LIMIT,
                rate_limited_message(reset_at),
                status=status,
                reset_at=reset_at,
                retry_after=wait,
            )
        if "rate limit" in message:
            return rate_limit_error(_reset_time(headers), status)
        return GitHubError(
            GitHubError.OTHER, f"GitHub refused the request (HTTP {status}).", status=status
        )
    if status == 404 or isinstance(exc, github.UnknownObjectException):
        return GitHubError(GitHubError.NOT_FOUND, "Not found on GitHub.", status=status)
    if status is not None and status >= 500:
        return GitHubError(GitHubError.SERVER, SERVER_ERROR_MESSAGE, status=status)
    return GitHubError(
        GitHubError.OTHER, f"GitHub refused the request (HTTP {status}).", status=status
    )


def _is_graphql_server_failure(errors: list, error_types: set) -> bool:
    if error_types - {"INTERNAL", "SERVICE_UNAVAILABLE", "TIMEOUT"}:
        return False  # typed errors (NOT_FOUND, EXCESSIVE_PAGINATION, ...) are about the query
    messages = " ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict)).lower()
    return bool(error_types) or "timeout" in messages or "something went wrong" in messages


def connection_token(connection: GitHubConnection | None) -> str:
    """The connection's token; GitHubError(AUTH) when there is none or it cannot be read."""
    if connection is None or not connection.encrypted_token:
        raise GitHubError(GitHubError.AUTH, BROKEN_CONNECTION_MESSAGE)
    try:
        return connection.get_token()
    except TokenUnreadable as exc:
        raise map_exception(exc) from None


def client_for(
    connection: GitHubConnection, *, rest_retries: bool = True, per_page: int = 100
) -> Github:
    return make_client(
        connection_token(connection),
        connection.api_url or settings.GITHUB_API_URL,
        rest_retries=rest_retries,
        per_page=per_page,
    )


def verify_token(token: str, api_url: str | None = None) -> str:
    """The login of the account ``token`` belongs to (``GET /user``); GitHubError otherwise."""
    if not token or not token.strip():
        raise GitHubError(GitHubError.AUTH, "Enter a GitHub token.")
    token = token.strip()
    if not TOKEN_CHARACTERS.fullmatch(token):
        # Spaces, line breaks, "…" copied from a placeholder: no GitHub token looks like this,
        # and such a header would fail before reaching GitHub (not a network problem).
        raise GitHubError(GitHubError.AUTH, ENTERED_TOKEN_REJECTED_MESSAGE)
    try:
        return make_client(token, api_url).get_user().login
    except Exception as exc:
        error = map_exception(exc)
        if error.kind == GitHubError.AUTH:
            error.user_message = ENTERED_TOKEN_REJECTED_MESSAGE
        raise error from None


def needs_reconnect(message: str) -> bool:
    """Whether a user-facing failure is fixed by connecting GitHub again."""
    return RECONNECT in (message or "")


def list_repositories(connection: GitHubConnection, *, per_page: int = 100) -> list[RepositoryInfo]:
    """Every repository the credential can see: its own, its collaborations and those of its
    organisations (``GET /user/repos``, all pages). Plain data, safe to cache or render."""
    try:
        gh = client_for(connection, per_page=per_page)
        repos = gh.get_user().get_repos(affiliation="owner,collaborator,organization_member")
        seen: dict[int, RepositoryInfo] = {}
        for repo in repos:
            # Only attributes present in the list payload: reading any other one would make
            # PyGithub fetch each repository again (one request per repository).
            seen[repo.id] = RepositoryInfo(
                github_id=repo.id,
                full_name=repo.full_name,
                private=bool(repo.private),
                default_branch=repo.default_branch or "",
                description=repo.description or "",
                updated_at=repo.updated_at,
            )
    except Exception as exc:
        error = map_exception(exc)
        logger.warning("listing repositories of team %s failed: %s", connection.team_id, error.kind)
        raise error from None
    return sorted(seen.values(), key=lambda info: info.full_name.lower())


def save_repositories(team: Team, infos: list[RepositoryInfo]) -> list[Repository]:
    """Upsert ``infos`` as the team's repositories, keyed by (team, github_id). The user's
    selection and sync times of existing rows are kept."""
    rows = [
        Repository(
            team=team,
            github_id=info.github_id,
            full_name=info.full_name,
            is_private=info.private,
            default_branch=info.default_branch,
        )
        for info in infos
    ]
    with transaction.atomic():
        Repository.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["team", "github_id"],
            update_fields=["full_name", "is_private", "default_branch"],
        )
    return list(Repository.objects.filter(team=team, github_id__in=[i.github_id for i in infos]))
