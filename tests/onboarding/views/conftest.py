"""Fixtures of the onboarding page tests: logged-in clients, a second team, and a local
stand-in for GitHub's OAuth token endpoint (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from procrastinate.contrib.django.models import ProcrastinateJob

from onboarding import crypto
from onboarding.models import GitHubConnection, Membership, Repository, Team

SECRET_TOKEN = "ghp_S3cretTokenThatMustNeverBeRendered0001"


@pytest.fixture
def member_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def other_team(db) -> Team:
    team = Team.objects.create(name="Globex")
    user = get_user_model().objects.create_user(username="hank", password="x-pass-word-1")
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    Repository.objects.create(team=team, github_id=9001, full_name="globex/secret-plans")
    return team


def connect(team: Team, api_url: str, token: str = SECRET_TOKEN, login: str = "octo") -> None:
    GitHubConnection.objects.update_or_create(
        team=team,
        defaults={
            "kind": GitHubConnection.Kind.PERSONAL_TOKEN,
            "encrypted_token": crypto.encrypt_token(token),
            "api_url": api_url,
            "account_login": login,
            "repositories_listed_at": None,
        },
    )


def queued_jobs() -> int:
    return ProcrastinateJob.objects.count()


class OAuthTokenEndpoint:
    """GitHub's ``POST /login/oauth/access_token``: answers ``reply`` (JSON) with ``status``,
    and records the form fields it received."""

    def __init__(self) -> None:
        self.reply: dict = {}
        self.status = 200
        self.received: list[dict[str, list[str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                endpoint.received.append(parse_qs(self.rfile.read(length).decode()))
                body = json.dumps(endpoint.reply).encode()
                if self.path != "/login/oauth/access_token":
                    self.send_response(404)
                else:
                    self.send_response(endpoint.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def oauth_endpoint(settings) -> Iterator[OAuthTokenEndpoint]:
    endpoint = OAuthTokenEndpoint()
    settings.GITHUB_WEB_URL = endpoint.url
    settings.GITHUB_OAUTH_CLIENT_ID = "client-123"
    settings.GITHUB_OAUTH_CLIENT_SECRET = "client-secret-456"
    yield endpoint
    endpoint.close()
