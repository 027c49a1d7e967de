"""The repository picker for a large organisation: the demo GitHub serving over 2,000
repositories. Any selection submits (one compact field, far below Django's 1,000-field limit),
and the listing comes from GitHub once per connection for a few minutes, with a Refresh."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.urls import reverse

from onboarding.demo_github.dataset import build_dataset, default_now
from onboarding.demo_github.server import DemoGitHubServer
from onboarding.models import GitHubConnection, Repository
from pipeline.models import PipelineRun
from tests.onboarding.views.conftest import connect

pytestmark = pytest.mark.django_db

EXTRA = 2000


@pytest.fixture(scope="module")
def large_org_dataset():
    return build_dataset(default_now(), pr_count=40, extra_repositories=EXTRA)


@pytest.fixture
def large_org(large_org_dataset) -> Iterator[DemoGitHubServer]:
    server = DemoGitHubServer(dataset=large_org_dataset).start()
    try:
        yield server
    finally:
        server.stop()


def listing_requests(server: DemoGitHubServer) -> int:
    return sum(1 for entry in server.requests if "/user/repos" in entry.path)


def test_two_thousand_repositories_list_once_and_submit_all_at_once(member_client, team, large_org):
    connect(team, large_org.api_url, token=large_org.token)
    total = len(large_org.dataset.repositories) + len(large_org.dataset.personal_repositories)
    assert total > EXTRA

    page = member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    boxes = re.findall(
        r'<input type="checkbox" name="repository" value="(\d+)"', page.content.decode()
    )
    assert len(boxes) == total
    fetched = listing_requests(large_org)
    assert fetched >= total // 100  # every page of GitHub's listing

    # Again, and after a refused submit: from the cache, GitHub is not asked.
    member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    refused = member_client.post(reverse("select_repositories"), {"repository_ids": "999999999"})
    assert refused.status_code == 400
    member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    assert listing_requests(large_org) == fetched

    # Refresh asks GitHub again.
    member_client.get(reverse("repository_list"), {"refresh": "1"}, headers={"HX-Request": "true"})
    assert listing_requests(large_org) > fetched

    # "Select all": every id in one field, well past DATA_UPLOAD_MAX_NUMBER_FIELDS.
    assert total > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    response = member_client.post(
        reverse("select_repositories"), {"repository_ids": ",".join(boxes)}
    )
    assert response.status_code == 302 and response["Location"] == reverse("progress")
    run = PipelineRun.objects.get(team=team)
    assert sorted(run.repository_ids) == sorted(int(pk) for pk in boxes)
    assert Repository.objects.filter(team=team, selected=True).count() == total


def test_a_refused_large_selection_comes_back_ticked(member_client, team, large_org):
    connect(team, large_org.api_url, token=large_org.token)
    member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    ids = list(Repository.objects.filter(team=team).values_list("pk", flat=True))
    response = member_client.post(
        reverse("select_repositories"), {"repository_ids": ",".join(map(str, ids)) + ",abc"}
    )
    assert response.status_code == 400
    page = response.content.decode()
    # The ticks come back through the page's script (a JSON list), not a 2,000-id URL.
    ticked = re.search(r'<script id="submitted-ids" type="application/json">\[([^\]]*)\]', page)
    assert ticked and len(ticked.group(1).split(",")) == len(ids)
    assert "selected=" not in page


def test_connecting_again_lists_afresh(member_client, team, large_org, settings):
    settings.GITHUB_API_URL = large_org.api_url
    connect(team, large_org.api_url, token=large_org.token)
    member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    fetched = listing_requests(large_org)
    # The listing is stored with the connection, not in one process's memory.
    assert GitHubConnection.objects.get(team=team).repositories_listed_at is not None

    response = member_client.post(reverse("connect_token"), {"token": large_org.token})
    assert response.status_code == 302
    member_client.get(reverse("repository_list"), headers={"HX-Request": "true"})
    assert listing_requests(large_org) > fetched
