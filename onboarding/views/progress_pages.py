"""The progress page (a shell around the live partial of onboarding/live.py), Retry and Cancel.

Every member sees the page; only admins retry or cancel. The live fragment is rendered once per
change for all of a team's viewers, so its admin-only controls are hidden for members by the
page (``data-role``), and the POST views refuse members whatever the page shows."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from onboarding.http import AuthenticatedHttpRequest, admin_team_of, is_team_admin, team_of
from onboarding.progress_snapshot import build_snapshot
from pipeline import transitions
from pipeline.errors import PipelineNotRetryable, PipelineNotRunning
from pipeline.status import PipelineStatus


@login_required
@require_GET
def progress(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = team_of(request)
    if team.pipeline_status == PipelineStatus.NOT_STARTED:
        return redirect("home")
    context = {
        "team": team,
        "progress": build_snapshot(team.pk),
        "role": "admin" if is_team_admin(request) else "member",
    }
    return render(request, "onboarding/progress.html", context)


@login_required
@require_POST
def retry_pipeline(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    try:
        transitions.retry_pipeline(team)
    except PipelineNotRetryable as refused:
        messages.error(request, str(refused))
    return redirect("progress")


@login_required
@require_POST
def cancel_pipeline(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    try:
        transitions.cancel_pipeline(team, reason=f"cancelled by {request.user.username}")
    except PipelineNotRunning as refused:
        messages.error(request, str(refused))
    else:
        messages.info(request, "The analysis was cancelled.")
    return redirect("home")
