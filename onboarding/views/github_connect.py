"""Connecting the team's GitHub: the OAuth web flow, a pasted personal access token, or the
bundled demo organisation. Every token is verified (who am I) before it is stored, encrypted;
no token is ever rendered, logged or put in a message."""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from onboarding import crypto, github
from onboarding.forms import PersonalTokenForm
from onboarding.http import AuthenticatedHttpRequest, admin_team_of
from onboarding.models import GitHubConnection, Team

logger = logging.getLogger(__name__)

OAUTH_STATE_SESSION_KEY = "github_oauth_state"
# Read access to private repositories and organisation membership (GitHub's OAuth scopes:
# https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/scopes-for-oauth-apps).
OAUTH_SCOPES = "repo read:org"
OAUTH_TIMEOUT_SECONDS = 15


def _oauth_configured() -> bool:
    return bool(settings.GITHUB_OAUTH_CLIENT_ID and settings.GITHUB_OAUTH_CLIENT_SECRET)


def _demo_available() -> bool:
    return bool(getattr(settings, "DEMO_GITHUB_URL", ""))


def _render_connect(
    request: AuthenticatedHttpRequest, form: PersonalTokenForm | None = None, status: int = 200
) -> HttpResponse:
    team = admin_team_of(request)
    connection = GitHubConnection.objects.filter(team=team).first()
    context = {
        "team": team,
        "connection": connection,
        "form": form or PersonalTokenForm(),
        "oauth_configured": _oauth_configured(),
        "demo_available": _demo_available(),
    }
    return render(request, "onboarding/connect_github.html", context, status=status)


def _save_connection(team: Team, *, kind: str, token: str, api_url: str) -> GitHubConnection:
    """Verify ``token`` against ``api_url`` and store it encrypted. Raises github.GitHubError
    (with a user_message) when GitHub does not accept it; nothing is stored then."""
    login = github.verify_token(token, api_url)
    connection, _ = GitHubConnection.objects.update_or_create(
        team=team,
        defaults={
            "kind": kind,
            "encrypted_token": crypto.encrypt_token(token),
            "api_url": api_url,
            "account_login": login,
            # Another account may see other repositories: list them afresh.
            "repositories_listed_at": None,
        },
    )
    logger.info("team %s connected GitHub as %s (%s)", team.pk, login, kind)
    return connection


@login_required
@require_GET
def connect_github(request: AuthenticatedHttpRequest) -> HttpResponse:
    admin_team_of(request)
    return _render_connect(request)


@login_required
@require_POST
def connect_token(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    form = PersonalTokenForm(request.POST)
    if not form.is_valid():
        return _render_connect(request, form, status=400)
    try:
        _save_connection(
            team,
            kind=GitHubConnection.Kind.PERSONAL_TOKEN,
            token=form.cleaned_data["token"],
            api_url=settings.GITHUB_API_URL,
        )
    except github.GitHubError as error:
        form.add_error("token", error.user_message)
        return _render_connect(request, form, status=400)
    return redirect("select_repositories")


@login_required
@require_POST
def connect_demo(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    if not _demo_available():
        messages.error(request, "The demo organisation is not running on this server.")
        return redirect("connect_github")
    try:
        _save_connection(
            team,
            kind=GitHubConnection.Kind.DEMO,
            token=settings.DEMO_GITHUB_TOKEN,
            api_url=settings.DEMO_GITHUB_URL,
        )
    except github.GitHubError as error:
        messages.error(request, error.user_message)
        return redirect("connect_github")
    return redirect("select_repositories")


@login_required
@require_GET
def oauth_start(request: AuthenticatedHttpRequest) -> HttpResponse:
    """Send the user to GitHub's authorize page with a one-time ``state`` kept in the session
    (https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps)."""
    admin_team_of(request)
    if not _oauth_configured():
        messages.error(request, "Signing in with GitHub is not configured on this server.")
        return redirect("connect_github")
    state = secrets.token_urlsafe(32)
    request.session[OAUTH_STATE_SESSION_KEY] = state
    query = urlencode(
        {
            "client_id": settings.GITHUB_OAUTH_CLIENT_ID,
            "redirect_uri": request.build_absolute_uri(reverse("oauth_callback")),
            "scope": OAUTH_SCOPES,
            "state": state,
            "allow_signup": "false",
        }
    )
    return redirect(f"{settings.GITHUB_WEB_URL}/login/oauth/authorize?{query}")


class OAuthError(Exception):
    def __init__(self, user_message: str) -> None:
        super().__init__(user_message)
        self.user_message = user_message


def exchange_code(code: str, redirect_uri: str) -> str:
    """Trade the callback's ``code`` for an access token at GitHub's token endpoint."""
    try:
        response = requests.post(
            f"{settings.GITHUB_WEB_URL}/login/oauth/access_token",
            data={
                "client_id": settings.GITHUB_OAUTH_CLIENT_ID,
                "client_secret": settings.GITHUB_OAUTH_CLIENT_SECRET,
                "code": code,
                "redirect_uri": redirect_uri,
            },
            headers={"Accept": "application/json"},
            timeout=OAUTH_TIMEOUT_SECONDS,
        )
    except requests.RequestException:
        raise OAuthError("GitHub could not be reached to finish signing in. Try again.") from None
    if response.status_code >= 500:
        raise OAuthError(
            f"GitHub answered with an error ({response.status_code}) while finishing sign-in. "
            "Try again in a moment."
        )
    try:
        payload = response.json()
    except ValueError:
        raise OAuthError("GitHub's answer to the sign-in could not be read. Try again.") from None
    if not isinstance(payload, dict):
        raise OAuthError("GitHub's answer to the sign-in could not be read. Try again.")
    if payload.get("error"):
        # GitHub's own words (e.g. "The code passed is incorrect or expired."), never the token.
        description = str(payload.get("error_description") or payload["error"])
        raise OAuthError(f"GitHub refused the sign-in: {description}")
    token = payload.get("access_token")
    if not token or response.status_code != 200:
        raise OAuthError("GitHub did not return an access token. Try again.")
    return str(token)


@login_required
@require_GET
def oauth_callback(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    # One use only: a replayed callback finds no state and is refused.
    expected_state = request.session.pop(OAUTH_STATE_SESSION_KEY, None)
    received_state = request.GET.get("state", "")
    if not expected_state or not secrets.compare_digest(expected_state, received_state):
        messages.error(
            request, "The GitHub sign-in could not be verified (state mismatch). Start again."
        )
        return redirect("connect_github")
    if request.GET.get("error"):
        description = request.GET.get("error_description") or request.GET["error"]
        messages.error(request, f"GitHub sign-in was not completed: {description}")
        return redirect("connect_github")
    code = request.GET.get("code", "")
    if not code:
        messages.error(request, "GitHub did not send a sign-in code. Start again.")
        return redirect("connect_github")
    try:
        token = exchange_code(code, request.build_absolute_uri(reverse("oauth_callback")))
        _save_connection(
            team, kind=GitHubConnection.Kind.OAUTH, token=token, api_url=settings.GITHUB_API_URL
        )
    except (OAuthError, github.GitHubError) as error:
        messages.error(request, error.user_message)
        return redirect("connect_github")
    return redirect("select_repositories")
