"""Connecting GitHub: personal token, the demo organisation, the OAuth web flow. Tokens are
verified against a real HTTP GitHub (the bundled demo server) and never rendered."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from django.urls import reverse

from onboarding import crypto
from onboarding.models import GitHubConnection
from pipeline import transitions
from tests.onboarding.views.conftest import SECRET_TOKEN, connect

pytestmark = pytest.mark.django_db


def test_connect_page_offers_token_and_says_oauth_is_not_configured(member_client, settings):
    settings.GITHUB_OAUTH_CLIENT_ID = ""
    settings.DEMO_GITHUB_URL = ""
    page = member_client.get(reverse("connect_github")).content.decode()
    assert "Paste a personal access token" in page
    assert "Not configured on this server" in page
    assert "Use the demo organisation" not in page


def test_demo_button_appears_when_the_demo_github_runs(member_client, settings):
    settings.DEMO_GITHUB_URL = "http://127.0.0.1:9"
    page = member_client.get(reverse("connect_github")).content.decode()
    assert "Use the demo organisation" in page


def test_connected_account_is_named_and_its_token_never_rendered(member_client, team):
    connect(team, "http://127.0.0.1:9", login="octo-admin")
    for name in ("connect_github", "select_repositories"):
        page = member_client.get(reverse(name)).content.decode()
        assert "@octo-admin" in page
        assert SECRET_TOKEN not in page
        assert crypto.encrypt_token(SECRET_TOKEN).decode()[:20] not in page


def test_personal_token_that_github_cannot_be_reached_for_is_not_saved(
    member_client, team, settings
):
    settings.GITHUB_API_URL = "http://127.0.0.1:9"
    response = member_client.post(reverse("connect_token"), {"token": SECRET_TOKEN})
    assert response.status_code == 400
    page = response.content.decode()
    assert "could not be reached" in page
    assert SECRET_TOKEN not in page
    assert not GitHubConnection.objects.filter(team=team).exists()


def test_empty_token_is_refused_with_a_message(member_client, team):
    response = member_client.post(reverse("connect_token"), {"token": "  "})
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()
    assert not GitHubConnection.objects.filter(team=team).exists()


def test_demo_button_refused_when_the_demo_is_not_running(member_client, team, settings):
    settings.DEMO_GITHUB_URL = ""
    response = member_client.post(reverse("connect_demo"), follow=True)
    assert "demo organisation is not running" in response.content.decode()
    assert not GitHubConnection.objects.filter(team=team).exists()


def test_oauth_start_redirects_to_github_with_a_state_kept_in_the_session(
    member_client, oauth_endpoint
):
    response = member_client.get(reverse("oauth_start"))
    assert response.status_code == 302
    target = urlparse(response["Location"])
    assert f"{target.scheme}://{target.netloc}" == oauth_endpoint.url
    assert target.path == "/login/oauth/authorize"
    query = parse_qs(target.query)
    assert query["client_id"] == ["client-123"]
    assert query["redirect_uri"][0].endswith(reverse("oauth_callback"))
    assert len(query["state"][0]) >= 32
    assert member_client.session["github_oauth_state"] == query["state"][0]


def test_oauth_start_without_configuration_explains(member_client, settings):
    settings.GITHUB_OAUTH_CLIENT_ID = ""
    response = member_client.get(reverse("oauth_start"), follow=True)
    assert "not configured on this server" in response.content.decode()


def test_oauth_callback_with_a_mismatched_state_is_refused_and_exchanges_nothing(
    member_client, team, oauth_endpoint
):
    member_client.get(reverse("oauth_start"))
    response = member_client.get(
        reverse("oauth_callback"), {"code": "abc", "state": "forged"}, follow=True
    )
    assert "state mismatch" in response.content.decode()
    assert oauth_endpoint.received == []
    assert not GitHubConnection.objects.filter(team=team).exists()


def test_oauth_callback_without_a_started_flow_is_refused(member_client, oauth_endpoint):
    response = member_client.get(
        reverse("oauth_callback"), {"code": "abc", "state": "anything"}, follow=True
    )
    assert "state mismatch" in response.content.decode()
    assert oauth_endpoint.received == []


def test_oauth_state_is_single_use(member_client, oauth_endpoint):
    state = parse_qs(urlparse(member_client.get(reverse("oauth_start"))["Location"]).query)[
        "state"
    ][0]
    oauth_endpoint.reply = {"error": "bad_verification_code", "error_description": "Expired."}
    member_client.get(reverse("oauth_callback"), {"code": "abc", "state": state})
    replay = member_client.get(
        reverse("oauth_callback"), {"code": "abc", "state": state}, follow=True
    )
    assert "state mismatch" in replay.content.decode()
    assert len(oauth_endpoint.received) == 1


def test_oauth_denied_by_the_user_shows_githubs_reason(member_client, oauth_endpoint):
    state = parse_qs(urlparse(member_client.get(reverse("oauth_start"))["Location"]).query)[
        "state"
    ][0]
    response = member_client.get(
        reverse("oauth_callback"),
        {
            "error": "access_denied",
            "error_description": "The user has denied your application access.",
            "state": state,
        },
        follow=True,
    )
    assert "denied your application access" in response.content.decode()
    assert oauth_endpoint.received == []


def test_oauth_code_rejected_by_github_shows_the_error(member_client, team, oauth_endpoint):
    state = parse_qs(urlparse(member_client.get(reverse("oauth_start"))["Location"]).query)[
        "state"
    ][0]
    oauth_endpoint.reply = {
        "error": "bad_verification_code",
        "error_description": "The code passed is incorrect or expired.",
    }
    response = member_client.get(
        reverse("oauth_callback"), {"code": "stale", "state": state}, follow=True
    )
    assert "The code passed is incorrect or expired." in response.content.decode()
    (sent,) = oauth_endpoint.received
    assert sent["code"] == ["stale"]
    assert sent["client_id"] == ["client-123"]
    assert sent["client_secret"] == ["client-secret-456"]
    assert not GitHubConnection.objects.filter(team=team).exists()


def test_oauth_token_endpoint_down_is_reported(member_client, oauth_endpoint):
    state = parse_qs(urlparse(member_client.get(reverse("oauth_start"))["Location"]).query)[
        "state"
    ][0]
    oauth_endpoint.status = 502
    response = member_client.get(
        reverse("oauth_callback"), {"code": "x", "state": state}, follow=True
    )
    assert "GitHub answered with an error (502)" in response.content.decode()


# Against the bundled demo GitHub over real HTTP (PyGithub, unmodified) ------------------------


def test_personal_token_is_verified_then_stored_encrypted(
    member_client, team, settings, demo_github_small
):
    settings.GITHUB_API_URL = demo_github_small.api_url
    response = member_client.post(reverse("connect_token"), {"token": demo_github_small.token})
    assert response["Location"] == reverse("select_repositories")
    connection = GitHubConnection.objects.get(team=team)
    assert connection.kind == GitHubConnection.Kind.PERSONAL_TOKEN
    assert connection.api_url == demo_github_small.api_url
    assert connection.account_login
    assert demo_github_small.token.encode() not in bytes(connection.encrypted_token)
    assert crypto.decrypt_token(connection.encrypted_token) == demo_github_small.token
    page = member_client.get(reverse("connect_github")).content.decode()
    assert f"@{connection.account_login}" in page
    assert demo_github_small.token not in page


def test_token_github_rejects_is_not_saved_and_the_page_says_why(
    member_client, team, settings, demo_github_small
):
    settings.GITHUB_API_URL = demo_github_small.api_url
    demo_github_small.unauthorized()
    response = member_client.post(reverse("connect_token"), {"token": SECRET_TOKEN})
    assert response.status_code == 400
    page = response.content.decode()
    assert "GitHub rejected this token (bad credentials)" in page
    assert "could not be reached" not in page
    assert SECRET_TOKEN not in page
    assert not GitHubConnection.objects.filter(team=team).exists()


def test_demo_button_connects_the_demo_organisation(
    member_client, team, settings, demo_github_small
):
    settings.DEMO_GITHUB_URL = demo_github_small.api_url
    settings.DEMO_GITHUB_TOKEN = demo_github_small.token
    response = member_client.post(reverse("connect_demo"))
    assert response["Location"] == reverse("select_repositories")
    connection = GitHubConnection.objects.get(team=team)
    assert connection.kind == GitHubConnection.Kind.DEMO
    assert connection.api_url == demo_github_small.api_url


def test_oauth_flow_exchanges_the_code_and_connects(
    member_client, team, settings, oauth_endpoint, demo_github_small
):
    settings.GITHUB_API_URL = demo_github_small.api_url
    oauth_endpoint.reply = {
        "access_token": demo_github_small.token,
        "token_type": "bearer",
        "scope": "repo,read:org",
    }
    state = parse_qs(urlparse(member_client.get(reverse("oauth_start"))["Location"]).query)[
        "state"
    ][0]
    response = member_client.get(reverse("oauth_callback"), {"code": "good", "state": state})
    assert response["Location"] == reverse("select_repositories")
    connection = GitHubConnection.objects.get(team=team)
    assert connection.kind == GitHubConnection.Kind.OAUTH
    assert crypto.decrypt_token(connection.encrypted_token) == demo_github_small.token
    page = member_client.get(reverse("connect_github")).content.decode()
    assert demo_github_small.token not in page


def test_token_appears_in_no_page_partial_or_endpoint(member_client, team, repositories):
    connect(team, "http://127.0.0.1:9", token=SECRET_TOKEN)
    ciphertext = bytes(GitHubConnection.objects.get(team=team).encrypted_token).decode()
    pages = ["home", "connect_github", "select_repositories", "repository_list", "dashboard"]
    bodies = [member_client.get(reverse(name), follow=True).content for name in pages]
    transitions.start_pipeline(team, [repositories[0].pk])
    for name in ("progress", "progress_fragment", "progress_status", "dashboard"):
        bodies.append(member_client.get(reverse(name)).content)
    for body in bodies:
        text = body.decode()
        assert SECRET_TOKEN not in text
        assert ciphertext not in text
