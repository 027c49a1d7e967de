"""Helpers shared by the sync stage's tests: a team connected to a demo GitHub server, its
repositories, and what the dataset says should be synced."""

from __future__ import annotations

import datetime

from django.utils import timezone

from onboarding.models import GitHubConnection, Repository


def connect(team, server, token: str | None = None) -> GitHubConnection:
    connection = GitHubConnection(
        team=team, kind="demo", api_url=server.api_url, account_login="octo-demo"
    )
    connection.set_token(token or server.token)
    connection.save()
    return connection


def add_repositories(team, server, names: list[str] | None = None) -> list[Repository]:
    return [
        Repository.objects.create(
            team=team, github_id=repo.database_id, full_name=repo.full_name, selected=True
        )
        for repo in server.dataset.repositories
        if names is None or repo.name in names
    ]


def in_window(server, days: int, names: list[str] | None = None) -> list:
    since = timezone.now() - datetime.timedelta(days=days)
    return [
        pr
        for pr in server.dataset.pull_requests
        if pr.updated_at >= since and (names is None or pr.repository.name in names)
    ]


def graphql_requests(server) -> list:
    return [r for r in server.requests if r.resource == "graphql"]
