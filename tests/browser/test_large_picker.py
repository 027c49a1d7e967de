"""The repository picker in Chromium with the demo GitHub serving over 2,000 repositories:
filter, select-all and the count work in the page, and "select all" submits and starts."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from onboarding import crypto
from onboarding.demo_github.dataset import build_dataset, default_now
from onboarding.demo_github.server import DemoGitHubServer
from onboarding.models import GitHubConnection, Membership, Team
from pipeline.models import PipelineRun

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def test_select_all_of_two_thousand_repositories_in_the_browser(
    asgi_server, browser_page, screenshot
):
    server = DemoGitHubServer(
        dataset=build_dataset(default_now(), pr_count=40, extra_repositories=2000)
    ).start()
    try:
        team = Team.objects.create(name="Big Org")
        user = get_user_model().objects.create_user(username="ida", password="a-long-pass-77")
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
        GitHubConnection.objects.create(
            team=team,
            kind=GitHubConnection.Kind.DEMO,
            encrypted_token=crypto.encrypt_token(server.token),
            api_url=server.api_url,
            account_login="octo",
        )
        total = len(server.dataset.repositories) + len(server.dataset.personal_repositories)
        connection.close()
        page, base = browser_page, asgi_server.url

        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", "ida")
        page.fill("#id_password", "a-long-pass-77")
        page.click("button[type=submit]")
        page.goto(f"{base}/repositories/")
        page.locator("input[name=repository]").first.wait_for(state="visible", timeout=60_000)
        assert page.locator("input[name=repository]").count() == total

        page.fill("#repository-filter", "archive-01")
        shown = page.locator("li:not([hidden]) input[name=repository]").count()
        assert shown == 100  # archive-0100 ... archive-0199
        page.check("#select-all")
        assert page.inner_text("#selected-count") == "100 selected"
        page.fill("#repository-filter", "")
        page.check("#select-all")
        assert page.inner_text("#selected-count") == f"{total} selected"
        screenshot("13-picker-2000-selected")

        page.click("#start-button")
        page.wait_for_url(f"{base}/progress/")
        try:
            run = PipelineRun.objects.get(team=team)
            assert len(run.repository_ids) == total
        finally:
            connection.close()
    finally:
        server.stop()
