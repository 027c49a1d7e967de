"""The team dashboard: weekly charts, insights, and every PR with its verdict and evidence, all
for the latest completed run's scope (``pipeline.scope``)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from onboarding import dashboard as dashboard_data
from onboarding.http import AuthenticatedHttpRequest, team_of
from onboarding.progress_snapshot import build_snapshot
from pipeline.models import AIVerdict, Insight, PipelineRun, PullRequest
from pipeline.nightly import last_nightly_update
from pipeline.rescore import catalogue_versions
from pipeline.scope import AI_SHARE_LABEL, team_scope
from pipeline.signatures import CATALOGUE_VERSION

PRS_PER_PAGE = 25


@login_required
@require_GET
def dashboard(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = team_of(request)
    # Everything below describes the latest completed run (pipeline.scope): its repositories,
    # its window, its insights. A run in progress changes nothing here until it completes.
    scope = team_scope(team.pk)
    ai_only = request.GET.get("ai") == "1"
    if scope is None:
        pull_requests = PullRequest.objects.none()
    else:
        pull_requests = (
            scope.pull_requests()
            .select_related("repository", "ai_verdict")
            .order_by("-created_at", "-id")
        )
    if ai_only:
        pull_requests = pull_requests.filter(ai_verdict__is_ai_assisted=True)
    page = Paginator(pull_requests, PRS_PER_PAGE).get_page(request.GET.get("page"))
    rows = [
        {
            "pr": pr,
            "verdict": getattr(pr, "ai_verdict", None),
            "evidence": dashboard_data.evidence_of(getattr(pr, "ai_verdict", None)),
        }
        for pr in page.object_list
    ]
    # A skipped nightly run (another run was going) is history for staff, not an analysis.
    latest_run = (
        PipelineRun.objects.filter(team=team)
        .exclude(state=PipelineRun.State.SKIPPED)
        .order_by("-started_at")
        .first()
    )
    # Which marker catalogue the numbers come from; another version shipped means a re-score
    # (pipeline.rescore) is due or running.
    versions = (
        catalogue_versions(AIVerdict.objects.filter(pull_request__in=scope.pull_requests()))
        if scope
        else []
    )
    context = {
        "team": team,
        "scope": scope,
        "charts": dashboard_data.charts(team, scope) if scope else None,
        "numbers": dashboard_data.headline_numbers(scope) if scope else None,
        "insights": Insight.objects.filter(team=team, run=scope.run) if scope else [],
        "page": page,
        "rows": rows,
        "ai_only": ai_only,
        "latest_run": latest_run,
        "last_nightly_update": last_nightly_update(team),
        "ai_share_label": AI_SHARE_LABEL,
        "catalogue_versions": versions,
        "catalogue_current": CATALOGUE_VERSION,
        "catalogue_outdated": any(v != CATALOGUE_VERSION for v in versions),
        # What the last run skipped or did without (e.g. signatures only, no LLM): the numbers
        # below should be read with it.
        "run_notes": build_snapshot(team.pk).notes if latest_run else [],
    }
    if request.htmx and request.htmx.target == "pr-table":
        return render(request, "onboarding/_pr_table.html", context)
    return render(request, "onboarding/dashboard.html", context)
