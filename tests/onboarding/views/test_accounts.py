"""Sign-up, log in/out, the home redirect, and login required everywhere."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from onboarding.models import Membership, Team
from pipeline.status import PipelineStatus
from tests.onboarding.views.conftest import connect

pytestmark = pytest.mark.django_db

SIGN_UP = {
    "username": "grace",
    "email": "grace@example.com",
    "password1": "a long enough passphrase",
    "password2": "a long enough passphrase",
    "team_name": "Compilers",
}


def test_sign_up_creates_the_team_with_the_user_as_admin_and_logs_in():
    client = Client()
    response = client.post(reverse("signup"), SIGN_UP)
    assert response.status_code == 302
    assert response["Location"] == reverse("connect_github")
    membership = Membership.objects.get(user__username="grace")
    assert membership.team.name == "Compilers"
    assert membership.role == Membership.Role.ADMIN
    assert client.get(reverse("connect_github")).status_code == 200


def test_sign_up_with_mismatched_passwords_shows_why_and_creates_nothing():
    response = Client().post(reverse("signup"), {**SIGN_UP, "password2": "something else"})
    assert response.status_code == 200
    assert "didn’t match" in response.content.decode() or "didn't match" in (
        response.content.decode()
    )
    assert not get_user_model().objects.filter(username="grace").exists()
    assert not Team.objects.exists()


def test_sign_up_needs_a_team_name():
    response = Client().post(reverse("signup"), {**SIGN_UP, "team_name": "   "})
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="grace").exists()


def test_log_in_and_log_out(admin_user):
    client = Client()
    response = client.post(
        reverse("login"), {"username": "ada", "password": "correct horse battery"}
    )
    assert response.status_code == 302
    assert client.get(reverse("connect_github")).status_code == 200
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("connect_github"))["Location"].startswith(reverse("login"))


def test_log_in_with_a_wrong_password_is_refused(admin_user):
    response = Client().post(reverse("login"), {"username": "ada", "password": "wrong"})
    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "home"),
        ("get", "connect_github"),
        ("post", "connect_token"),
        ("post", "connect_demo"),
        ("get", "oauth_start"),
        ("get", "oauth_callback"),
        ("get", "select_repositories"),
        ("post", "select_repositories"),
        ("get", "repository_list"),
        ("get", "progress"),
        ("post", "retry_pipeline"),
        ("get", "dashboard"),
    ],
)
def test_every_page_requires_login(method, name):
    response = getattr(Client(), method)(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_home_sends_each_team_to_its_step(member_client, team):
    assert member_client.get(reverse("home"))["Location"] == reverse("connect_github")
    connect(team, "http://127.0.0.1:9")
    assert member_client.get(reverse("home"))["Location"] == reverse("select_repositories")
    for status in (PipelineStatus.SYNCING, PipelineStatus.FAILED):
        Team.objects.filter(pk=team.pk).update(pipeline_status=status)
        assert member_client.get(reverse("home"))["Location"] == reverse("progress")
    Team.objects.filter(pk=team.pk).update(pipeline_status=PipelineStatus.COMPLETE)
    assert member_client.get(reverse("home"))["Location"] == reverse("dashboard")


def test_a_user_without_a_team_gets_not_found_not_someone_elses_data(db):
    user = get_user_model().objects.create_user(username="loner", password="x-pass-word-1")
    client = Client()
    client.force_login(user)
    assert client.get(reverse("dashboard")).status_code == 404
