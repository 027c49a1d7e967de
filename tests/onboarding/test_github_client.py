"""The PyGithub boundary against the demo GitHub over real HTTP: token check, repository
listing across pages, and what users read when GitHub says no."""

from __future__ import annotations

import datetime
import logging
import re

import pytest
from cryptography.fernet import Fernet
from django.utils import timezone

from onboarding import github
from onboarding.github import GitHubError
from onboarding.models import GitHubConnection, Repository

pytestmark = pytest.mark.django_db

BROKEN = "GitHub connection is broken: reconnect GitHub."
REJECTED = "GitHub rejected the team's token (bad credentials): reconnect GitHub."


def connect(team, server, api_url: str | None = None, token: str | None = None):
    connection = GitHubConnection(
        team=team, kind="demo", api_url=api_url or server.api_url, account_login="octo-demo"
    )
    connection.set_token(token or server.token)
    connection.save()
    return connection


def core_requests(server) -> list:
    return [r for r in server.requests if r.resource == "core"]


def visible_repositories(server) -> list[str]:
    dataset = server.dataset
    return sorted(
        (r.full_name for r in dataset.personal_repositories + dataset.repositories),
        key=str.lower,
    )


def test_verify_token_returns_the_accounts_login(demo_github_small):
    login = github.verify_token(demo_github_small.token, demo_github_small.api_url)

    assert login == demo_github_small.dataset.viewer.login


def test_verify_token_says_a_wrong_token_was_rejected(demo_github_small):
    with pytest.raises(GitHubError) as caught:
        github.verify_token("ghp_wrong", demo_github_small.api_url)

    assert caught.value.kind == GitHubError.AUTH
    assert caught.value.user_message.startswith("GitHub rejected this token (bad credentials).")


@pytest.mark.parametrize("junk", ["ghp_junk\ntoken", "ghp_…", "not a token", "tökén"])
def test_a_junk_token_is_rejected_not_reported_as_unreachable(demo_github_small, junk):
    with pytest.raises(GitHubError) as caught:
        github.verify_token(junk, demo_github_small.api_url)

    assert caught.value.kind == GitHubError.AUTH
    assert caught.value.user_message.startswith("GitHub rejected this token")
    assert "could not be reached" not in caught.value.user_message


def test_verify_token_refuses_an_empty_token_without_calling_github(demo_github_small):
    with pytest.raises(GitHubError) as caught:
        github.verify_token("   ", demo_github_small.api_url)

    assert caught.value.user_message == "Enter a GitHub token."
    assert demo_github_small.requests == []


def test_list_repositories_follows_every_page_without_a_request_per_repository(
    team, demo_github_small
):
    connection = connect(team, demo_github_small)

    infos = github.list_repositories(connection, per_page=2)

    assert [i.full_name for i in infos] == visible_repositories(demo_github_small)
    pages = [r for r in core_requests(demo_github_small) if r.path.startswith("/api/v3/user/repos")]
    assert len(pages) == -(-len(infos) // 2)  # ceil: every page once
    assert len(core_requests(demo_github_small)) == len(pages)  # nothing per repository
    api = next(i for i in infos if i.full_name == "tformance-demo/api")
    assert api.default_branch == "main" and api.private is True
    assert api.github_id == demo_github_small.dataset.repositories[0].database_id
    assert isinstance(api.updated_at, datetime.datetime) and api.description


def test_save_repositories_upserts_and_keeps_the_users_selection(team, demo_github_small):
    connection = connect(team, demo_github_small)
    infos = github.list_repositories(connection)
    first = github.save_repositories(team, infos)
    Repository.objects.filter(team=team, full_name="tformance-demo/api").update(selected=True)

    again = github.save_repositories(team, github.list_repositories(connection))

    assert len(again) == len(first) == Repository.objects.filter(team=team).count()
    assert list(
        Repository.objects.filter(team=team, selected=True).values_list("full_name", flat=True)
    ) == ["tformance-demo/api"]


def test_a_revoked_token_is_rejected_and_asks_to_reconnect(team, demo_github_small):
    demo_github_small.unauthorized()
    connection = connect(team, demo_github_small)

    with pytest.raises(GitHubError) as caught:
        github.list_repositories(connection)

    assert (caught.value.kind, caught.value.user_message) == (GitHubError.AUTH, REJECTED)
    assert len(core_requests(demo_github_small)) == 1  # no retries of a 401


def test_the_rate_limit_message_says_when_to_come_back(team, demo_github_small):
    demo_github_small.rate_limited(remaining=0, reset_in=1800, resource="core")
    connection = connect(team, demo_github_small)

    with pytest.raises(GitHubError) as caught:
        github.list_repositories(connection)

    reset = timezone.now() + datetime.timedelta(seconds=1800)
    assert caught.value.kind == GitHubError.RATE_LIMITED
    match = re.fullmatch(
        r"GitHub rate limit reached; try again after (\d\d:\d\d) UTC\.", caught.value.user_message
    )
    assert match is not None
    candidates = {f"{reset + datetime.timedelta(minutes=d):%H:%M}" for d in (-1, 0)}
    assert match.group(1) in candidates
    assert len(core_requests(demo_github_small)) == 1  # no sleeping until the reset


def test_an_unreachable_github_says_so(team):
    # Port 9 (discard) refuses connections on this machine.
    connection = GitHubConnection.objects.create(
        team=team, kind="pat", api_url="http://127.0.0.1:9/api/v3", account_login="x"
    )
    connection.set_token("ghp_anything")
    connection.save()

    with pytest.raises(GitHubError) as caught:
        github.list_repositories(connection)

    assert caught.value.kind == GitHubError.UNREACHABLE
    assert caught.value.user_message.startswith("GitHub could not be reached")


def test_a_passing_502_is_retried_and_the_listing_succeeds(team, demo_github_small):
    demo_github_small.bad_gateway(count=1)
    connection = connect(team, demo_github_small)

    infos = github.list_repositories(connection)

    assert [i.full_name for i in infos] == visible_repositories(demo_github_small)
    assert [r.status for r in core_requests(demo_github_small)][:2] == [502, 200]


def test_a_lasting_5xx_gives_the_github_error_message_after_a_few_tries(team, demo_github_small):
    demo_github_small.bad_gateway(count=100)
    connection = connect(team, demo_github_small)

    with pytest.raises(GitHubError) as caught:
        github.list_repositories(connection)

    assert caught.value.kind == GitHubError.SERVER
    assert caught.value.user_message == "GitHub had an error; try again."
    assert len(core_requests(demo_github_small)) == 3  # first try + 2 retries, no storm


def test_an_undecryptable_token_is_a_broken_connection_and_nothing_is_sent(team, demo_github_small):
    connection = connect(team, demo_github_small)
    connection.encrypted_token = Fernet(Fernet.generate_key()).encrypt(b"demo-token")
    connection.save()

    with pytest.raises(GitHubError) as caught:
        github.list_repositories(connection)

    assert caught.value.user_message == BROKEN
    assert demo_github_small.requests == []


def test_the_token_never_reaches_logs_or_errors(team, demo_github_small, caplog):
    demo_github_small.unauthorized()
    secret = "ghp_ThisMustNeverBeLogged0123456789"
    connection = connect(team, demo_github_small, token=secret)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(GitHubError) as caught:
        github.list_repositories(connection)

    assert secret not in caplog.text
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert secret not in repr(connection)
