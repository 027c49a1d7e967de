"""Repository selection: the page shell, the htmx list and its failures, starting the pipeline."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from onboarding.models import Repository
from pipeline.models import PipelineRun
from pipeline.status import PipelineStatus
from tests.onboarding.views.conftest import connect, queued_jobs

pytestmark = pytest.mark.django_db


def test_page_renders_at_once_with_a_loading_indicator_and_loads_the_list_via_htmx(
    member_client, team
):
    # The connection points at a port that answers nothing: the page must not wait for GitHub.
    connect(team, "http://127.0.0.1:9", login="octo")
    response = member_client.get(reverse("select_repositories"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Loading your repositories from GitHub" in page
    assert f'hx-get="{reverse("repository_list")}"' in page
    assert 'hx-trigger="load"' in page
    assert 'id="repository-filter"' in page
    assert 'id="select-all"' in page
    assert "0 selected" in page


def test_without_a_connection_the_page_sends_the_user_to_connect_github(member_client):
    response = member_client.get(reverse("select_repositories"))
    assert response["Location"] == reverse("connect_github")


def test_unreachable_github_shows_why_and_a_retry_button(member_client, team):
    connect(team, "http://127.0.0.1:9")
    response = member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    # 200 so that htmx swaps the message in (it ignores 4xx/5xx bodies by default).
    assert response.status_code == 200
    page = response.content.decode()
    assert "We could not load your repositories" in page
    assert "GitHub could not be reached" in page
    assert "Retry" in page
    assert f'hx-get="{reverse("repository_list")}"' in page


def test_list_without_a_connection_says_connect_first(member_client):
    page = member_client.get(reverse("repository_list")).content.decode()
    assert "Connect GitHub first" in page


def test_start_with_nothing_selected_is_refused_and_enqueues_nothing(
    member_client, team, repositories
):
    connect(team, "http://127.0.0.1:9")
    response = member_client.post(reverse("select_repositories"), {})
    assert response.status_code == 400
    assert "Select at least one repository." in response.content.decode()
    assert queued_jobs() == 0
    assert not PipelineRun.objects.exists()
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.NOT_STARTED


def test_start_with_another_teams_repository_is_refused_and_enqueues_nothing(
    member_client, team, repositories, other_team
):
    connect(team, "http://127.0.0.1:9")
    foreign = Repository.objects.get(team=other_team)
    response = member_client.post(
        reverse("select_repositories"), {"repository": [repositories[0].pk, foreign.pk]}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "not available to your team" in page
    assert "globex/secret-plans" not in page
    assert queued_jobs() == 0
    assert not PipelineRun.objects.exists()
    assert not Repository.objects.filter(selected=True).exists()
    # The user's ticks come back with the list, so nothing they chose is lost.
    assert (
        f'<script id="submitted-ids" type="application/json">[{repositories[0].pk}, {foreign.pk}]'
        in page
    )


def test_start_with_a_malformed_id_is_refused(member_client, team, repositories):
    connect(team, "http://127.0.0.1:9")
    response = member_client.post(reverse("select_repositories"), {"repository": ["1; DROP"]})
    assert response.status_code == 400
    assert "is not a repository id" in response.content.decode()
    assert queued_jobs() == 0


def test_start_queues_the_pipeline_and_shows_the_progress_page(member_client, team, repositories):
    connect(team, "http://127.0.0.1:9")
    chosen = [repositories[0].pk, repositories[2].pk]
    response = member_client.post(reverse("select_repositories"), {"repository": chosen})
    assert response.status_code == 302
    assert response["Location"] == reverse("progress")
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    run = PipelineRun.objects.get(team=team)
    assert run.repository_ids == sorted(chosen)
    assert queued_jobs() == 1
    assert set(Repository.objects.filter(selected=True).values_list("pk", flat=True)) == set(chosen)


def test_double_submit_gives_one_run(member_client, team, repositories):
    connect(team, "http://127.0.0.1:9")
    for _ in range(2):
        response = member_client.post(
            reverse("select_repositories"), {"repository": [repositories[0].pk]}
        )
        assert response["Location"] == reverse("progress")
    assert PipelineRun.objects.filter(team=team).count() == 1
    assert queued_jobs() == 1


def test_while_running_the_selection_page_sends_to_progress(member_client, team, repositories):
    connect(team, "http://127.0.0.1:9")
    member_client.post(reverse("select_repositories"), {"repository": [repositories[0].pk]})
    assert member_client.get(reverse("select_repositories"))["Location"] == reverse("progress")


# Against the bundled demo GitHub over real HTTP ------------------------------------------------


def test_list_shows_the_repositories_github_lists_and_stores_them(
    member_client, team, demo_github_small
):
    connect(team, demo_github_small.api_url, token=demo_github_small.token)
    response = member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    page = response.content.decode()
    stored = list(Repository.objects.filter(team=team))
    assert stored
    for repository in stored:
        assert repository.full_name in page
        assert f'value="{repository.pk}"' in page
    assert demo_github_small.token not in page


def test_list_with_a_revoked_token_says_reconnect_and_offers_retry(
    member_client, team, demo_github_small
):
    connect(team, demo_github_small.api_url, token=demo_github_small.token)
    demo_github_small.unauthorized()
    page = member_client.get(reverse("repository_list")).content.decode()
    assert "reconnect GitHub" in page
    assert "Retry" in page
    assert not Repository.objects.filter(team=team).exists()


def test_list_when_rate_limited_says_until_when(member_client, team, demo_github_small):
    connect(team, demo_github_small.api_url, token=demo_github_small.token)
    demo_github_small.rate_limited(remaining=0, reset_in=600)
    page = member_client.get(reverse("repository_list")).content.decode()
    assert re.search(r"rate limit reached; try again after \d\d:\d\d UTC", page)
    assert "Retry" in page


def test_retry_after_a_failure_loads_the_list(member_client, team, demo_github_small):
    connect(team, demo_github_small.api_url, token=demo_github_small.token)
    demo_github_small.bad_gateway(count=10)
    failed = member_client.get(reverse("repository_list")).content.decode()
    assert "We could not load your repositories" in failed
    demo_github_small.reset()
    retried = member_client.get(reverse("repository_list")).content.decode()
    assert "We could not load your repositories" not in retried
    assert Repository.objects.filter(team=team).exists()
