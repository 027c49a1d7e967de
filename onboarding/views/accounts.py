"""Sign-up, and the home page that sends each user to the step their team is at."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from onboarding.backends import BACKEND
from onboarding.forms import SignUpForm
from onboarding.http import AuthenticatedHttpRequest, is_team_admin, team_of
from onboarding.models import GitHubConnection
from pipeline.models import PipelineRun, RunKind
from pipeline.status import PipelineStatus


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend=BACKEND)
        return redirect("connect_github")
    return render(request, "registration/signup.html", {"form": form})


def _scheduled_run_on_top_of_a_dashboard(team) -> bool:
    """A nightly or re-score run (running, or failed: staff handle that) refreshes a dashboard
    the team already has: the user keeps seeing the dashboard, not a progress page."""
    latest = (
        PipelineRun.objects.filter(team=team)
        .exclude(state=PipelineRun.State.SKIPPED)
        .order_by("-started_at")
        .first()
    )
    return latest is not None and latest.kind != RunKind.ONBOARDING


@login_required
def home(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = team_of(request)
    status = team.pipeline_status
    if status == PipelineStatus.COMPLETE or _scheduled_run_on_top_of_a_dashboard(team):
        return redirect("dashboard")
    if status != PipelineStatus.NOT_STARTED:
        # Running or failed: the progress page shows where it is and offers Retry.
        return redirect("progress")
    if not is_team_admin(request):
        # Members follow what admins start; until then the team page says who they are.
        messages.info(request, "Your team's admins have not started an analysis yet.")
        return redirect("team")
    if not GitHubConnection.objects.filter(team=team).exists():
        return redirect("connect_github")
    return redirect("select_repositories")
