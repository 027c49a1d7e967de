"""Team isolation, crawled: every URL pattern of settings/urls.py, enumerated from the resolver
(so a new view is covered the day it is added), requested with GET and POST by a user of
another team (an admin there) and by an anonymous visitor.

None of the victim team's data may appear in any answer (its name, repositories, PR titles,
insights, its GitHub login, its admin's e-mail, its token), nothing of it may change, and an
anonymous visitor gets no page but the public ones (log in, sign up).

Parameters are filled with the victim's own ids (its membership, its team, its run), so a view
that forgot the team filter would find the victim's rows. The live stream answers 503 under the
test client's WSGI handler before reading anything; its isolation under ASGI is tested in
tests/onboarding/test_live.py (two teams' streams never see each other's events).
"""

from __future__ import annotations

import datetime

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import Resolver404, get_resolver, resolve
from django.utils import timezone

from onboarding.models import GitHubConnection, Invitation, Membership, Repository, Team
from pipeline.models import Insight, PipelineRun, PullRequest, WeeklyMetric
from pipeline.status import PipelineStatus
from tests.onboarding.views.conftest import SECRET_TOKEN, connect

pytestmark = pytest.mark.django_db

MARKERS = (
    "Victim Unit 731",
    "victim-org/crown-jewels",
    "Secret merger plan",
    "Victim insight headline",
    "victim-gh-login",
    "victim-admin@example.com",
    SECRET_TOKEN,
)
# The only pages an anonymous visitor may see (they show no team data).
PUBLIC = {"accounts/login/", "accounts/signup/", "admin/login/"}


def all_url_formats() -> list[tuple[str, tuple[str, ...]]]:
    """Every pattern's reverse format ('team/members/%(membership_id)s/role/', params), the
    root resolver's and every namespace's (the admin)."""

    def walk(resolver, prefix: str) -> list[tuple[str, tuple[str, ...]]]:
        found = []
        for _key, entries in resolver.reverse_dict.lists():
            for possibilities, _pattern, _defaults, _converters in entries:
                for format_string, params in possibilities:
                    found.append((prefix + format_string, tuple(params)))
        for sub_prefix, sub in resolver.namespace_dict.values():
            found += walk(sub, prefix + sub_prefix)
        return found

    return sorted(set(walk(get_resolver(), "")))


@pytest.fixture
def victim(repositories) -> Team:
    team = Team.objects.create(name="Victim Unit 731")
    admin = get_user_model().objects.create_user(
        username="victim-admin", email="victim-admin@example.com", password="x-pass-word-7"
    )
    Membership.objects.create(team=team, user=admin, role=Membership.Role.ADMIN)
    connect(team, "http://127.0.0.1:9", login="victim-gh-login")
    repo = Repository.objects.create(
        team=team, github_id=4242, full_name="victim-org/crown-jewels", selected=True
    )
    now = timezone.now()
    run = PipelineRun.objects.create(
        team=team,
        stage=PipelineStatus.COMPLETE,
        state=PipelineRun.State.COMPLETE,
        repository_ids=[repo.pk],
        started_at=now - datetime.timedelta(hours=1),
        finished_at=now,
    )
    Team.objects.filter(pk=team.pk).update(pipeline_status=PipelineStatus.COMPLETE)
    PullRequest.objects.create(
        team=team,
        repository=repo,
        number=1,
        title="Secret merger plan",
        state=PullRequest.State.OPEN,
        author_login="victim-dev",
        created_at=now - datetime.timedelta(days=2),
        updated_at=now,
    )
    WeeklyMetric.objects.create(
        team=team, week_start=datetime.date(2026, 9, 7), prs_opened=5, prs_merged=3
    )
    Insight.objects.create(team=team, run=run, kind="x", headline="Victim insight headline")
    Invitation.objects.create(
        team=team, token_hash="0" * 64, expires_at=now + datetime.timedelta(days=1)
    )
    return team


def state_of(team: Team) -> tuple:
    return (
        Team.objects.filter(pk=team.pk).values_list("name", "pipeline_status").get(),
        bytes(GitHubConnection.objects.get(team=team).encrypted_token),
        sorted(Membership.objects.filter(team=team).values_list("user__username", "role")),
        sorted(Repository.objects.filter(team=team).values_list("full_name", "selected")),
        sorted(PipelineRun.objects.filter(team=team).values_list("pk", "state")),
        Invitation.objects.filter(team=team, used_at__isnull=True).count(),
        Insight.objects.filter(team=team).count(),
    )


def urls_for(victim: Team) -> list[str]:
    membership = Membership.objects.get(team=victim)
    run = PipelineRun.objects.get(team=victim)
    candidates = {
        "membership_id": [membership.pk],
        "id": [membership.user_id],
        "object_id": [victim.pk, run.pk, membership.pk],
        "token": ["0" * 64, "not-a-token"],
        "app_label": ["onboarding", "pipeline", "auth"],
        "url": ["onboarding/team/"],
    }
    urls, unresolved = [], []
    for format_string, params in all_url_formats():
        values = [
            dict(zip(params, combo, strict=True)) for combo in _combinations(params, candidates)
        ]
        for kwargs in values or [{}]:
            url = "/" + format_string % {k: str(v) for k, v in kwargs.items()}
            try:
                resolve(url)
            except Resolver404:
                continue
            urls.append(url)
        if not any(url.startswith("/" + format_string.split("%(")[0]) for url in urls):
            unresolved.append(format_string)
    assert not unresolved, f"patterns the crawl could not fill: {unresolved}"
    return sorted(set(urls))


def _combinations(params: tuple[str, ...], candidates: dict[str, list]) -> list[tuple]:
    combos: list[tuple] = [()]
    for param in params:
        combos = [c + (value,) for c in combos for value in candidates.get(param, ["1"])]
    return combos if params else []


def crawl(client: Client, urls: list[str]) -> list[tuple[str, str, int, str]]:
    answers = []
    for url in urls:
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            body = b"" if getattr(response, "streaming", False) else response.content
            answers.append((method, url, response.status_code, body.decode(errors="replace")))
    return answers


def test_the_crawl_covers_every_pattern_of_the_resolver(victim):
    urls = urls_for(victim)
    formats = all_url_formats()
    # Every non-admin pattern of the project is requested, and the admin's too.
    assert len(formats) > 50
    for name in ("/dashboard/", "/team/", "/progress/stream/", "/repositories/list/"):
        assert name in urls


def test_another_teams_user_sees_and_changes_nothing_of_the_victim(victim, other_team):
    before = state_of(victim)
    intruder = Client()
    intruder.force_login(Membership.objects.get(team=other_team).user)
    answers = crawl(intruder, urls_for(victim))
    leaks = [(m, url, s) for m, url, s, body in answers if any(mark in body for mark in MARKERS)]
    assert leaks == []
    assert state_of(victim) == before
    # Server errors are bugs; the SSE streams answer 503 under WSGI (they need ASGI).
    assert not [
        (m, url, status)
        for m, url, status, _ in answers
        if status >= 500 and not (status == 503 and url.endswith("/stream/"))
    ]


def test_an_anonymous_visitor_sees_only_the_public_pages(victim):
    before = state_of(victim)
    answers = crawl(Client(), urls_for(victim))
    leaks = [(m, url, s) for m, url, s, body in answers if any(mark in body for mark in MARKERS)]
    assert leaks == []
    shown = sorted({url for m, url, status, _ in answers if status == 200 and m == "get"})
    assert set(shown) <= {"/" + path for path in PUBLIC}, shown
    assert state_of(victim) == before
