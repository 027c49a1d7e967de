"""Repository selection: the page renders at once; the list arrives through htmx from GitHub;
submitting starts the pipeline."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from onboarding import crypto, github
from onboarding.http import AuthenticatedHttpRequest, team_of
from onboarding.models import GitHubConnection
from pipeline.errors import InvalidSelection
from pipeline.status import RUNNING_STATUSES
from pipeline.transitions import start_pipeline

logger = logging.getLogger(__name__)


def _int_ids(values: list[str]) -> list[int]:
    return [int(value) for value in values if value.isdigit()]


@login_required
@require_http_methods(["GET", "POST"])
def select_repositories(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = team_of(request)
    connection = GitHubConnection.objects.filter(team=team).first()
    if connection is None:
        return redirect("connect_github")
    error = ""
    submitted: list[str] = []
    if request.method == "POST":
        submitted = request.POST.getlist("repository")
        try:
            start_pipeline(team, submitted)
        except InvalidSelection as invalid:
            # Nothing was enqueued; the page comes back with the user's ticks kept.
            error = str(invalid)
        else:
            # A double submit gets the running run back: either way, watch it.
            return redirect("progress")
    elif team.pipeline_status in RUNNING_STATUSES:
        return redirect("progress")
    context = {
        "team": team,
        "connection": connection,
        "error": error,
        "submitted_ids": _int_ids(submitted),
    }
    return render(
        request, "onboarding/select_repositories.html", context, status=400 if error else 200
    )


@login_required
@require_GET
def repository_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The htmx partial: fetch the repositories the connection can see, store them, render the
    checklist. A failure renders the reason and a Retry button (status 200 so htmx swaps it in)."""
    team = team_of(request)
    connection = GitHubConnection.objects.filter(team=team).first()
    context: dict = {"connection": connection, "error": "", "repositories": []}
    if connection is None:
        context["error"] = "Connect GitHub first."
        return render(request, "onboarding/_repository_list.html", context)
    try:
        infos = github.list_repositories(connection)
        # Only what GitHub lists now: a repository the token lost access to is not offered.
        repositories = github.save_repositories(team, infos)
    except github.GitHubError as failure:
        context["error"] = failure.user_message
        return render(request, "onboarding/_repository_list.html", context)
    except crypto.TokenUnreadable:
        context["error"] = "GitHub connection is broken: reconnect GitHub."
        return render(request, "onboarding/_repository_list.html", context)
    repositories.sort(key=lambda repository: repository.full_name.lower())
    wanted = set(_int_ids(request.GET.getlist("selected")))
    for repository in repositories:
        # Ticks the user made before a refused submit win over the stored selection.
        repository.checked = repository.pk in wanted if wanted else repository.selected
    context["repositories"] = repositories
    return render(request, "onboarding/_repository_list.html", context)
