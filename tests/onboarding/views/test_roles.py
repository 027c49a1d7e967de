"""Roles: every view, fragment and the stream, for an admin and a member of the same team.

Admins connect GitHub, choose repositories, start, retry and cancel, invite and change roles;
members see the progress (page, fragment, stream, JSON) and the dashboard, and get 403 on the
rest. One-time invitation links and role changes are tested end to end."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from onboarding.models import GitHubConnection, Invitation, Membership
from pipeline import transitions
from pipeline.models import PipelineRun
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages, wait_for
from tests.onboarding.views.conftest import connect

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def member(team):
    user = get_user_model().objects.create_user(
        username="bob", email="bob@example.com", password="x-pass-word-2"
    )
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return user


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# (name, method, url name, data, headers, expected status for an admin, for a member).
# Admin statuses are what a correct request gets in the fixture's state (a running pipeline,
# a connection to an unreachable GitHub): what matters is that members are refused before
# anything happens, and that admins are not.
ADMIN_ONLY = [
    ("connection page", "get", "connect_github", None, {}, 200),
    ("token form", "post", "connect_token", {"token": ""}, {}, 400),
    ("demo connection", "post", "connect_demo", {}, {}, 302),
    ("oauth start", "get", "oauth_start", None, {}, 302),
    ("oauth callback", "get", "oauth_callback", None, {}, 302),
    ("repository picker", "get", "select_repositories", None, {}, 302),
    ("start", "post", "select_repositories", {"repository_ids": ""}, {}, 400),
    ("repository list fragment", "get", "repository_list", None, HTMX, 200),
    ("retry", "post", "retry_pipeline", {}, {}, 302),
    ("cancel", "post", "cancel_pipeline", {}, {}, 302),
    ("invite", "post", "create_invitation", {"role": "member"}, {}, 200),
]
EVERYONE = [
    ("progress page", "get", "progress", None, {}),
    ("progress fragment", "get", "progress_fragment", None, HTMX),
    ("status JSON", "get", "progress_status", None, {}),
    ("dashboard", "get", "dashboard", None, {}),
    ("dashboard table fragment", "get", "dashboard", None, {**HTMX, "HX-Target": "pr-table"}),
    ("team page", "get", "team", None, {}),
]


@pytest.fixture
def running(team, repositories):
    connect(team, "http://127.0.0.1:9")
    return transitions.start_pipeline(team, [repositories[0].pk])


def call(client: Client, method: str, url_name: str, data, headers):
    return getattr(client, method)(reverse(url_name), data or {}, headers=headers)


@pytest.mark.parametrize(
    "name,method,url_name,data,headers,admin_status", ADMIN_ONLY, ids=[v[0] for v in ADMIN_ONLY]
)
def test_members_are_refused_what_only_admins_may_do(
    admin_user, member, running, name, method, url_name, data, headers, admin_status
):
    token_before = GitHubConnection.objects.get().encrypted_token
    refused = call(client_of(member), method, url_name, data, headers)
    assert refused.status_code == 403
    assert "Only the team&#x27;s admins can do this" in refused.content.decode()
    # Nothing changed: same connection, same run, still running.
    assert bytes(GitHubConnection.objects.get().encrypted_token) == bytes(token_before)
    assert PipelineRun.objects.get().state == PipelineRun.State.RUNNING

    allowed = call(client_of(admin_user), method, url_name, data, headers)
    assert allowed.status_code == admin_status


@pytest.mark.parametrize("role", ["admin", "member"])
@pytest.mark.parametrize(
    "name,method,url_name,data,headers", EVERYONE, ids=[v[0] for v in EVERYONE]
)
def test_every_member_sees_progress_and_dashboard(
    admin_user, member, running, role, name, method, url_name, data, headers
):
    user = admin_user if role == "admin" else member
    response = call(client_of(user), method, url_name, data, headers)
    assert response.status_code == 200


def test_the_progress_page_hides_admin_controls_from_members(team, admin_user, member, running):
    attempt = transitions.begin_stage(running.pk, PipelineStatus.SYNCING, job_id=None)
    transitions.fail_stage(
        attempt.pk, "GitHub rejected the team's token (bad credentials): reconnect GitHub."
    )
    for user, role in ((admin_user, "admin"), (member, "member")):
        page = client_of(user).get(reverse("progress")).content.decode()
        assert f'data-role="{role}"' in page
        # The shared fragment carries both; the page's rule shows one side per role.
        assert '<form method="post" action="/progress/retry/" class="admin-only">' in page
        assert f'href="{reverse("connect_github")}" class="button primary" data-reconnect' in page
        assert "A team admin can reconnect GitHub and retry." in page
        assert '#progress-page[data-role="member"] .admin-only' in page


def test_members_land_on_the_team_page_before_anything_started(member, team):
    response = client_of(member).get(reverse("home"))
    assert response["Location"] == reverse("team")
    page = client_of(member).get(reverse("team")).content.decode()
    assert "bob" in page
    assert "Create a one-time link" not in page  # members do not invite
    assert 'name="role"' not in page  # nor change roles


def test_a_one_time_link_makes_a_new_account_a_member_once(admin_user, team):
    page = client_of(admin_user).post(reverse("create_invitation"), {"role": "member"})
    link = re.search(r"<code data-invitation-link>([^<]+)</code>", page.content.decode()).group(1)
    path = link.removeprefix("http://testserver")
    token = path.rstrip("/").rsplit("/", 1)[1]
    # Only the token's hash is stored.
    assert not Invitation.objects.filter(token_hash=token).exists()

    visitor = Client()
    form = visitor.get(path)
    assert form.status_code == 200 and f"Join {team.name}" in form.content.decode()
    joined = visitor.post(
        path,
        {
            "username": "carol",
            "email": "carol@example.com",
            "password1": "a-long-pass-phrase-9",
            "password2": "a-long-pass-phrase-9",
        },
    )
    assert joined.status_code == 302
    membership = Membership.objects.get(user__username="carol")
    assert (membership.team, membership.role) == (team, Membership.Role.MEMBER)
    assert visitor.get(reverse("dashboard")).status_code == 200

    # Used: the same link lets nobody else in.
    assert Client().get(path).status_code == 404


def test_an_invited_admin_can_do_admin_things(admin_user, team):
    page = client_of(admin_user).post(reverse("create_invitation"), {"role": "admin"})
    link = re.search(r"<code data-invitation-link>([^<]+)</code>", page.content.decode()).group(1)
    user = get_user_model().objects.create_user(username="dana", password="x-pass-word-3")
    client = client_of(user)
    assert client.post(link.removeprefix("http://testserver")).status_code == 302
    assert client.get(reverse("connect_github")).status_code == 200


def test_admins_change_roles_and_the_last_admin_stays(admin_user, member, team):
    admin = client_of(admin_user)
    bob = Membership.objects.get(user=member)
    admin.post(reverse("change_role", args=[bob.pk]), {"role": "admin"})
    assert client_of(member).get(reverse("connect_github")).status_code == 200

    admin.post(reverse("change_role", args=[bob.pk]), {"role": "member"})
    assert client_of(member).get(reverse("connect_github")).status_code == 403

    # The only admin cannot make themselves a member.
    own = Membership.objects.get(user=admin_user)
    response = admin.post(reverse("change_role", args=[own.pk]), {"role": "member"}, follow=True)
    assert "A team needs at least one admin" in response.content.decode()
    assert Membership.objects.get(pk=own.pk).role == Membership.Role.ADMIN


def test_an_admin_cannot_change_another_teams_roles(admin_user, other_team):
    foreign = Membership.objects.get(team=other_team)
    response = client_of(admin_user).post(
        reverse("change_role", args=[foreign.pk]), {"role": "member"}
    )
    assert response.status_code == 404
    assert Membership.objects.get(pk=foreign.pk).role == Membership.Role.ADMIN


@pytest.mark.django_db(transaction=True)
def test_members_and_admins_follow_the_stream(sse_connect, admin_user, member, running):
    for user in (admin_user, member):
        client = sse_connect(user)
        assert client.status_code == 200
        assert client.next_event().event == "progress"


@pytest.mark.django_db(transaction=True)
def test_a_stream_closes_when_its_user_leaves_the_team(sse_connect, settings, member, running):
    settings.LIVE_KEEPALIVE_SECONDS = 0.3
    client = sse_connect(member)
    assert client.next_event().event == "progress"
    Membership.objects.filter(user=member).delete()
    wait_for(lambda: client.ended.is_set(), timeout=10)
    events = []
    while not client.events.empty():
        item = client.events.get_nowait()
        if item is not None:
            events.append(item)
    assert events and events[-1].event == "done"


def test_finished_runs_show_the_admin_no_cancel_button(admin_user, running):
    finish_stages(running)
    page = client_of(admin_user).get(reverse("progress")).content.decode()
    assert "data-cancel" not in page
    assert "Insights ready for" in page
