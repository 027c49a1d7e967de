"""The sync stage against the bundled demo GitHub over real HTTP with unmodified PyGithub: full
sync, window, re-sync, adaptive paging, rate limits, and every failure a user can meet."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from onboarding.demo_github.dataset import build_dataset
from onboarding.demo_github.server import DemoGitHubServer
from onboarding.models import Repository
from pipeline import signals, transitions
from pipeline.errors import RescheduleStage, StageError
from pipeline.models import PipelineRun, PullRequest, PullRequestCommit, PullRequestReview
from pipeline.stages import sync
from tests.pipeline.sync_helpers import add_repositories, connect, graphql_requests, in_window

pytestmark = pytest.mark.django_db


@pytest.fixture
def signals_received():
    received: list[dict] = []

    def receiver(sender, **kwargs):
        received.append(kwargs)

    signals.repository_sync_completed.connect(receiver)
    yield received
    signals.repository_sync_completed.disconnect(receiver)


def test_full_sync_stores_every_pr_of_the_window_with_commits_and_reviews(
    team, demo_github, signals_received, django_capture_on_commit_callbacks
):
    connect(team, demo_github)
    repositories = add_repositories(team, demo_github)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    expected = in_window(demo_github, 90)

    with django_capture_on_commit_callbacks(execute=True):
        counts = sync.run(run)

    assert counts["prs_synced"] == len(expected) == PullRequest.objects.count()
    assert counts["repositories_synced"] == len(repositories)
    assert counts["repositories_skipped"] == 0
    assert PullRequestCommit.objects.count() == sum(len(pr.commits) for pr in expected)
    assert PullRequestReview.objects.count() == sum(len(pr.reviews) for pr in expected)
    newest = expected[0]
    stored = PullRequest.objects.get(
        repository__full_name=newest.repository.full_name, number=newest.number
    )
    assert stored.title == newest.title and stored.author_login == newest.author.rest_login
    assert stored.updated_at == newest.updated_at
    # Progress says it all, and each repository announced itself after its commit.
    run.refresh_from_db()
    assert run.progress["repositories_done"] == run.progress["repositories_total"] == 6
    assert run.progress["prs_synced"] == len(expected)
    assert sorted(s["full_name"] for s in signals_received) == sorted(
        r.full_name for r in repositories
    )
    assert all(r.last_synced_at for r in Repository.objects.filter(team=team))
    # ≤ 25 requests per 1,000 PRs: one request carries 100 PRs with their commits and reviews.
    assert len(graphql_requests(demo_github)) * 1000 / len(expected) <= 25


def test_a_pr_with_more_commits_than_a_page_carries_is_stored_whole(team):
    dataset = build_dataset(pr_count=60)
    long_pr = dataset.pulls_by_updated["api"][0]
    template = long_pr.commits[0]
    long_pr.commits = [
        dataclasses.replace(template, oid=f"{i:040x}", message=f"Step {i}") for i in range(130)
    ]
    with DemoGitHubServer(dataset=dataset) as server:
        connect(team, server)
        repositories = add_repositories(team, server, ["api"])
        run = transitions.start_pipeline(team, [r.pk for r in repositories])

        sync.run(run)

        follow_ups = [r for r in graphql_requests(server) if r.graphql_cost and r.graphql_first]
    stored = PullRequest.objects.get(repository=repositories[0], number=long_pr.number)
    assert stored.commits.count() == 130
    assert set(stored.commits.values_list("message", flat=True)) == {
        f"Step {i}" for i in range(130)
    }
    # 50 came with the page; the other 80 in follow-up requests of the current page size.
    assert len(follow_ups) >= 2


def test_the_window_cuts_off_older_prs(team, demo_github_small, settings):
    settings.SYNC_WINDOW_DAYS = 20
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    expected = in_window(demo_github_small, 20)
    older = len(demo_github_small.dataset.pull_requests) - len(expected)

    sync.run(run)

    assert older > 0
    assert PullRequest.objects.count() == len(expected)
    oldest_kept = PullRequest.objects.order_by("updated_at").first().updated_at
    assert oldest_kept >= timezone.now() - datetime.timedelta(days=20, minutes=1)


def test_a_later_sync_updates_changed_prs_without_duplicates(team):
    dataset = build_dataset(pr_count=150)
    with DemoGitHubServer(dataset=dataset) as server:
        connect(team, server)
        repositories = add_repositories(team, server)
        first_run = transitions.start_pipeline(team, [r.pk for r in repositories])
        sync.run(first_run)
        before = (
            PullRequest.objects.count(),
            PullRequestCommit.objects.count(),
            PullRequestReview.objects.count(),
        )
        # On GitHub, a PR gets a new title and is merged since the first sync.
        changed = next(pr for pr in dataset.pull_requests if pr.state == "OPEN")
        changed.title = "Retitled after review"
        changed.state = "MERGED"
        changed.merged_at = changed.closed_at = changed.updated_at = dataset.now
        pulls = dataset.pulls_by_updated[changed.repository.name]
        pulls.sort(key=lambda p: (p.updated_at, p.number), reverse=True)
        PipelineRun.objects.filter(pk=first_run.pk).update(state=PipelineRun.State.COMPLETE)
        second_run = transitions.start_pipeline(team, [r.pk for r in repositories])

        counts = sync.run(second_run)

    after = (
        PullRequest.objects.count(),
        PullRequestCommit.objects.count(),
        PullRequestReview.objects.count(),
    )
    assert after == before
    assert counts["prs_synced"] == before[0]
    stored = PullRequest.objects.get(
        repository__full_name=changed.repository.full_name, number=changed.number
    )
    assert (stored.title, stored.state) == ("Retitled after review", "merged")
    assert stored.merged_at == dataset.now


# GitHub reports a query it could not finish in time either as a 502/504, or as HTTP 200 with
# an untyped "Something went wrong ... may be the result of a timeout" error.
@pytest.mark.parametrize("timeout_status", [502, 200], ids=["http-502", "graphql-error-200"])
def test_page_size_shrinks_when_large_pages_time_out_and_the_sync_completes(
    team, demo_github_small, timeout_status
):
    demo_github_small.timeout_on_large_pages(max_first=50, status=timeout_status)
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    counts = sync.run(run)

    assert counts["prs_synced"] == len(in_window(demo_github_small, 90))
    requests = graphql_requests(demo_github_small)
    assert [(r.status, r.graphql_first) for r in requests[:2]] == [
        (timeout_status, 100),
        (200, 50),
    ]
    # It probes the big size again now and then (GitHub's trouble may pass), but rarely.
    failed = [r for r in requests if r.graphql_first == 100]
    assert len(failed) <= 2


def test_an_exhausted_budget_reschedules_the_stage_for_the_reset(team, demo_github_small):
    demo_github_small.rate_limited(remaining=0, reset_in=900, resource="graphql")
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    with pytest.raises(RescheduleStage) as caught:
        sync.run(run)

    expected_reset = timezone.now() + datetime.timedelta(seconds=900)
    assert abs((caught.value.at - expected_reset).total_seconds()) < 15
    assert "rate limit" in caught.value.reason


def test_a_budget_too_small_for_the_next_page_reschedules_then_resumes_without_duplicates(
    team, demo_github_small
):
    # Enough for one page (3 points), not for the next: the stage stops before asking.
    demo_github_small.rate_limited(remaining=4, reset_in=600, resource="graphql")
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api", "web"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    with pytest.raises(RescheduleStage):
        sync.run(run)

    first_page = PullRequest.objects.count()
    assert 0 < first_page < len(in_window(demo_github_small, 90, ["api", "web"]))
    assert graphql_requests(demo_github_small)[-1].status == 200  # no request was refused
    demo_github_small.reset()  # the budget is back after the reset
    run.refresh_from_db()

    counts = sync.run(run)

    assert PullRequest.objects.count() == len(in_window(demo_github_small, 90, ["api", "web"]))
    assert counts["prs_synced"] == PullRequest.objects.count()


def test_a_secondary_limit_is_waited_out_and_the_sync_succeeds(team, demo_github_small):
    demo_github_small.secondary_limit(count=2, status=403, retry_after=1)
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    counts = sync.run(run)

    assert counts["prs_synced"] == len(in_window(demo_github_small, 90, ["api"]))
    statuses = [r.status for r in graphql_requests(demo_github_small)]
    assert statuses[:3] == [403, 403, 200]
    first, third = graphql_requests(demo_github_small)[0], graphql_requests(demo_github_small)[2]
    assert third.at - first.at >= 2  # retry-after honoured twice


def test_a_long_secondary_limit_wait_reschedules_instead_of_holding_the_worker(
    team, demo_github_small
):
    demo_github_small.secondary_limit(count=1, status=429, retry_after=600)
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    started = timezone.now()
    with pytest.raises(RescheduleStage) as caught:
        sync.run(run)

    assert timezone.now() - started < datetime.timedelta(seconds=10)
    expected = started + datetime.timedelta(seconds=600)
    assert abs((caught.value.at - expected).total_seconds()) < 15
    assert len(graphql_requests(demo_github_small)) == 1


def test_github_errors_that_do_not_go_away_fail_the_attempt_as_retryable(
    team, demo_github_small, settings
):
    settings.GITHUB_RETRY_BASE_SECONDS = 0.01
    demo_github_small.bad_gateway(count=50)
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    with pytest.raises(StageError) as caught:
        sync.run(run)

    assert caught.value.retryable is True
    assert caught.value.user_message == "GitHub had an error; try again."
    assert len(graphql_requests(demo_github_small)) == 5  # a few tries, not a storm


def test_timeouts_are_retried_a_few_times_then_fail_the_attempt_as_retryable(
    team, demo_github_small, settings
):
    settings.GITHUB_TIMEOUT_SECONDS = 1  # PyGithub takes whole seconds
    settings.GITHUB_RETRY_BASE_SECONDS = 0.01
    demo_github_small.slow(1.5)
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    started = time.monotonic()
    with pytest.raises(StageError) as caught:
        sync.run(run)
    elapsed = time.monotonic() - started

    assert caught.value.retryable is True
    assert caught.value.user_message == "GitHub took too long to answer; try again."
    # Five tries of 1 s each (the demo server logs only answered requests, so time it).
    assert 5 <= elapsed < 10


def test_a_revoked_token_fails_at_once_with_the_reconnect_message(team, demo_github_small):
    demo_github_small.unauthorized()
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small)
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    with pytest.raises(StageError) as caught:
        sync.run(run)

    assert caught.value.retryable is False
    assert (
        caught.value.user_message
        == "GitHub rejected the team's token (bad credentials): reconnect GitHub."
    )
    assert len(graphql_requests(demo_github_small)) == 1


def test_a_vanished_repository_is_skipped_and_reported(team, demo_github_small):
    demo_github_small.missing_repo("web")
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small, ["api", "web"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    counts = sync.run(run)

    assert counts == {
        **counts,
        "repositories_synced": 1,
        "repositories_skipped": 1,
        "prs_synced": len(in_window(demo_github_small, 90, ["api"])),
    }
    run.refresh_from_db()
    assert run.summary["skipped_repositories"] == [
        {"id": repositories[1].pk, "full_name": "tformance-demo/web", "reason": "not found"}
    ]
    assert run.progress["repositories_done"] == 2


class SamlEnforcingProxy(BaseHTTPRequestHandler):
    """In front of the demo GitHub: GraphQL queries about one repository get GitHub's answer for
    an organisation that enforces SAML SSO the token was not authorised for; everything else
    is forwarded."""

    def log_message(self, format, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        variables = json.loads(body or b"{}").get("variables") or {}
        if variables.get("name") == self.server.protected_name:
            self._answer(
                200,
                {"Content-Type": "application/json; charset=utf-8"},
                json.dumps(
                    {
                        "data": {"rateLimit": None, "repository": None},
                        "errors": [
                            {
                                "type": "FORBIDDEN",
                                "path": ["repository"],
                                "message": "Resource protected by organization SAML enforcement."
                                " You must grant your Personal Access token access to this"
                                " organization.",
                            }
                        ],
                    }
                ).encode(),
            )
            return
        request = urllib.request.Request(
            self.server.upstream + self.path,
            data=body,
            method="POST",
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self._answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as error:
            self._answer(error.code, dict(error.headers), error.read())

    def _answer(self, status: int, headers: dict, payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def saml_proxy(demo_github_small):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SamlEnforcingProxy)
    server.upstream = demo_github_small.base_url
    server.protected_name = "web"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v3"
    server.shutdown()
    server.server_close()


def test_a_repository_behind_sso_is_skipped_with_the_reason_and_the_rest_synced(
    team, demo_github_small, saml_proxy
):
    connection = connect(team, demo_github_small)
    connection.api_url = saml_proxy
    connection.save()
    repositories = add_repositories(team, demo_github_small, ["api", "web"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    counts = sync.run(run)

    assert (counts["repositories_synced"], counts["repositories_skipped"]) == (1, 1)
    assert counts["prs_synced"] == len(in_window(demo_github_small, 90, ["api"]))
    run.refresh_from_db()
    (skipped,) = run.summary["skipped_repositories"]
    assert skipped["full_name"] == "tformance-demo/web"
    assert skipped["reason"].startswith("access denied")


@pytest.mark.parametrize("damage", ["other_key", "no_token", "no_connection"])
def test_an_unreadable_or_missing_token_fails_at_once_without_calling_github(
    team, demo_github_small, settings, damage
):
    if damage != "no_connection":
        connection = connect(team, demo_github_small)
        if damage == "other_key":
            connection.encrypted_token = Fernet(Fernet.generate_key()).encrypt(b"demo-token")
        else:
            connection.encrypted_token = b""
        connection.save()
    repositories = add_repositories(team, demo_github_small, ["api"])
    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    with pytest.raises(StageError) as caught:
        sync.run(run)

    assert caught.value.retryable is False
    assert caught.value.user_message == "GitHub connection is broken: reconnect GitHub."
    assert demo_github_small.requests == []
