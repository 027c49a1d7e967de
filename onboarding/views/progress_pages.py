"""The progress page (a shell around the live partial of onboarding/live.py) and Retry."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from onboarding.http import AuthenticatedHttpRequest, team_of
from onboarding.progress import build_snapshot
from pipeline import transitions
from pipeline.errors import PipelineNotRetryable
from pipeline.status import PipelineStatus


@login_required
@require_GET
def progress(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = team_of(request)
    if team.pipeline_status == PipelineStatus.NOT_STARTED:
        return redirect("home")
    context = {"team": team, "progress": build_snapshot(team.pk)}
    return render(request, "onboarding/progress.html", context)


@login_required
@require_POST
def retry_pipeline(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = team_of(request)
    try:
        transitions.retry_pipeline(team)
    except PipelineNotRetryable as refused:
        messages.error(request, str(refused))
    return redirect("progress")
