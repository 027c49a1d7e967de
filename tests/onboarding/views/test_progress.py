"""The progress page shell, Retry, and CSRF on POSTs (htmx included)."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from onboarding.models import Repository, Team
from pipeline import transitions
from pipeline.models import PipelineRun
from pipeline.status import PipelineStatus
from tests.onboarding.views.conftest import queued_jobs

pytestmark = pytest.mark.django_db

FAILURE = "GitHub connection is broken: reconnect GitHub."


def failed_in_sync(team: Team, repositories) -> PipelineRun:
    """A run that failed in its first stage, through the engine's own transitions."""
    run = transitions.start_pipeline(team, [repositories[0].pk])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    assert transitions.fail_stage(attempt.pk, FAILURE)
    return run


def test_progress_page_wraps_the_live_partial_with_stream_and_polling_fallback(
    member_client, team, repositories
):
    transitions.start_pipeline(team, [repositories[0].pk])
    page = member_client.get(reverse("progress")).content.decode()
    assert f'sse-connect="{reverse("progress_stream")}"' in page
    assert 'sse-swap="progress"' in page
    assert 'sse-close="done"' in page
    assert f'hx-get="{reverse("progress_fragment")}"' in page
    assert 'id="pipeline-progress"' in page
    assert 'data-status="syncing"' in page
    # The SSE extension is served from our own static files, not a CDN.
    assert re.search(r'src="/static/django_htmx/ext/hx-sse-2\.min\.js"', page)
    assert "https://" not in re.sub(r"<a [^>]*>", "", page)


def test_progress_before_any_start_goes_home(member_client):
    assert member_client.get(reverse("progress"))["Location"] == reverse("home")


def test_failed_run_shows_the_error_and_a_retry_button(member_client, team, repositories):
    failed_in_sync(team, repositories)
    page = member_client.get(reverse("progress")).content.decode()
    assert FAILURE in page
    assert f'action="{reverse("retry_pipeline")}"' in page


def test_retry_resumes_the_failed_stage(member_client, team, repositories):
    run = failed_in_sync(team, repositories)
    jobs_before = queued_jobs()
    response = member_client.post(reverse("retry_pipeline"))
    assert response["Location"] == reverse("progress")
    team.refresh_from_db()
    run.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING
    assert team.pipeline_error == ""
    assert run.state == PipelineRun.State.RUNNING
    assert queued_jobs() == jobs_before + 1
    assert PipelineRun.objects.filter(team=team).count() == 1


def test_retry_of_a_running_pipeline_is_refused_with_a_message(member_client, team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])
    jobs_before = queued_jobs()
    response = member_client.post(reverse("retry_pipeline"), follow=True)
    assert "Only a failed pipeline can be retried." in response.content.decode()
    assert queued_jobs() == jobs_before


def test_retry_by_get_is_not_allowed(member_client, team, repositories):
    failed_in_sync(team, repositories)
    assert member_client.get(reverse("retry_pipeline")).status_code == 405
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.FAILED


def test_post_without_csrf_token_is_rejected(admin_user, team, repositories):
    failed_in_sync(team, repositories)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(reverse("retry_pipeline")).status_code == 403
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.FAILED


def test_htmx_requests_carry_the_csrf_token_from_the_body(admin_user, team, repositories):
    failed_in_sync(team, repositories)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    page = client.get(reverse("progress")).content.decode()
    token = re.search(r"hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'", page).group(1)
    response = client.post(
        reverse("retry_pipeline"), headers={"X-CSRFToken": token, "HX-Request": "true"}
    )
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING


def test_another_teams_pipeline_cannot_be_retried(member_client, team, other_team):
    failed_in_sync(other_team, list(Repository.objects.filter(team=other_team)))
    member_client.post(reverse("retry_pipeline"))
    other_team.refresh_from_db()
    assert other_team.pipeline_status == PipelineStatus.FAILED
