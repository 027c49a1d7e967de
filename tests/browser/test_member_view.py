"""A member (not an admin) in Chromium: a failed run's page shows the reason and who can act,
without the Retry, Cancel or Reconnect controls only admins may use."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from onboarding.models import Membership, Team
from pipeline import transitions
from pipeline.status import PipelineStatus

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def test_a_member_sees_a_failure_without_admin_controls(asgi_server, browser_page, repositories):
    team = Team.objects.get(pk=repositories[0].team_id)
    user = get_user_model().objects.create_user(username="milo", password="a-long-pass-88")
    Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    run = transitions.start_pipeline(team, [repositories[0].pk])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    transitions.fail_stage(
        attempt.pk, "GitHub rejected the team's token (bad credentials): reconnect GitHub."
    )
    connection.close()
    page, base = browser_page, asgi_server.url

    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", "milo")
    page.fill("#id_password", "a-long-pass-88")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/progress/")
    error = page.locator(".pipeline-progress__error")
    error.wait_for(state="visible")
    assert "GitHub rejected the team's token" in error.inner_text()
    assert error.locator("button", has_text="Retry").is_hidden()
    assert error.locator("[data-reconnect]").is_hidden()
    assert error.locator(".member-only").is_visible()
    assert "A team admin can reconnect GitHub and retry." in error.inner_text()
    # Nor do the admin pages appear in the navigation.
    assert page.locator(".topnav a", has_text="Repositories").count() == 0
