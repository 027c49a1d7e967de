"""Repository selection: the page renders at once; the list arrives through htmx from GitHub;
submitting starts the pipeline. Admins only (onboarding.http).

Large organisations (thousands of repositories):
- The form posts the ticked ids as one comma-separated field (``repository_ids``, written by
  the page's script on submit; the checkboxes themselves are not posted), so "Select all" over
  2,000 repositories is one field, far below ``DATA_UPLOAD_MAX_NUMBER_FIELDS``. Plain
  ``repository`` fields are still read when the script did not run.
- The listing is fetched from GitHub (every page) at most once per ``LISTING_CACHE_SECONDS``
  per connection: the connection records when (``repositories_listed_at``) and the listed
  repositories carry the same ``listed_at``, so any web process can serve it again from the
  database. A new token (the connection's listing time is reset) or the Refresh button
  fetches again. A refused submit re-renders from the stored listing, not from GitHub.
- Filter, select-all and the count run in the browser over the rendered checkboxes.
"""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from onboarding import crypto, github
from onboarding.http import AuthenticatedHttpRequest, admin_team_of
from onboarding.models import GitHubConnection, Repository
from pipeline.errors import InvalidSelection
from pipeline.status import RUNNING_STATUSES
from pipeline.transitions import start_pipeline

logger = logging.getLogger(__name__)

LISTING_CACHE_SECONDS = 300


def _int_ids(values: list[str]) -> list[int]:
    return [int(value) for value in values if value.strip().isdigit()]


def submitted_ids(request: AuthenticatedHttpRequest) -> list[str]:
    """The ticked repository ids: the compact field, else the checkboxes (no script)."""
    compact = request.POST.get("repository_ids")
    if compact is not None:
        return [value.strip() for value in compact.split(",") if value.strip()]
    return request.POST.getlist("repository")


@login_required
@require_http_methods(["GET", "POST"])
def select_repositories(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    connection = GitHubConnection.objects.filter(team=team).first()
    if connection is None:
        return redirect("connect_github")
    error = ""
    submitted: list[str] = []
    if request.method == "POST":
        submitted = submitted_ids(request)
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


def _listed_repositories(connection: GitHubConnection, *, refresh: bool) -> list[Repository]:
    """What GitHub lists for the connection, re-used while the last listing is fresh. The
    freshness lives in the database (not a per-process cache), so every web process and the
    Refresh button agree."""
    listed_at = connection.repositories_listed_at
    now = timezone.now()
    fresh = listed_at is not None and (now - listed_at).total_seconds() < LISTING_CACHE_SECONDS
    if fresh and not refresh:
        return list(Repository.objects.filter(team_id=connection.team_id, listed_at=listed_at))
    infos = github.list_repositories(connection)
    with transaction.atomic():
        # Only what GitHub lists now: a repository the token lost access to is not offered.
        repositories = github.save_repositories(connection.team, infos)
        Repository.objects.filter(pk__in=[r.pk for r in repositories]).update(listed_at=now)
        # Not when the token was replaced meanwhile (connected_at moved): its listing is new.
        GitHubConnection.objects.filter(
            pk=connection.pk, connected_at=connection.connected_at
        ).update(repositories_listed_at=now)
    return repositories


@login_required
@require_GET
def repository_list(request: AuthenticatedHttpRequest) -> HttpResponse:
    """The htmx partial: the repositories the connection can see (cached for a few minutes,
    ``?refresh=1`` fetches again), as a checklist. A failure renders the reason and a Retry
    button (status 200 so htmx swaps it in)."""
    team = admin_team_of(request)
    connection = GitHubConnection.objects.filter(team=team).first()
    context: dict = {"connection": connection, "error": "", "repositories": []}
    if connection is None:
        context["error"] = "Connect GitHub first."
        return render(request, "onboarding/_repository_list.html", context)
    try:
        repositories = _listed_repositories(connection, refresh=request.GET.get("refresh") == "1")
    except github.GitHubError as failure:
        context["error"] = failure.user_message
        context["reconnect"] = failure.kind == github.GitHubError.AUTH
        return render(request, "onboarding/_repository_list.html", context)
    except crypto.TokenUnreadable:
        context["error"] = github.BROKEN_CONNECTION_MESSAGE
        context["reconnect"] = True
        return render(request, "onboarding/_repository_list.html", context)
    repositories.sort(key=lambda repository: repository.full_name.lower())
    wanted = set(_int_ids(request.GET.get("selected", "").split(",")))
    wanted |= set(_int_ids(request.GET.getlist("selected")))
    for repository in repositories:
        # Ticks the user made before a refused submit win over the stored selection.
        repository.checked = repository.pk in wanted if wanted else repository.selected
    context["repositories"] = repositories
    return render(request, "onboarding/_repository_list.html", context)
