"""The onboarding admin: staff see which GitHub account is connected, never its token."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from onboarding.models import GitHubConnection
from tests.onboarding.views.conftest import SECRET_TOKEN, connect

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(db) -> Client:
    user = get_user_model().objects.create_superuser("root", "root@example.com", "x-pass-word-1")
    client = Client()
    client.force_login(user)
    return client


def test_connection_admin_shows_the_account_but_never_the_token(staff_client, team):
    connect(team, "http://127.0.0.1:9", login="octo-admin")
    connection = GitHubConnection.objects.get(team=team)
    ciphertext = bytes(connection.encrypted_token).decode()
    pages = [
        staff_client.get(reverse("admin:onboarding_githubconnection_changelist")),
        staff_client.get(reverse("admin:onboarding_githubconnection_change", args=[connection.pk])),
    ]
    for response in pages:
        assert response.status_code == 200
        page = response.content.decode()
        assert "octo-admin" in page
        assert SECRET_TOKEN not in page
        assert ciphertext not in page
        assert "encrypted_token" not in page


def test_team_repository_and_membership_admin_pages_open(staff_client, team, repositories):
    for name in ("team", "repository", "membership"):
        assert staff_client.get(reverse(f"admin:onboarding_{name}_changelist")).status_code == 200
    assert (
        staff_client.get(reverse("admin:onboarding_team_change", args=[team.pk])).status_code == 200
    )
