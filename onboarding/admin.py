"""Admin for teams, members, GitHub connections and repositories. The encrypted token is
excluded from every form and list: staff see which account is connected, never its token."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Prefetch
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from onboarding.models import GitHubConnection, Membership, Repository, Team
from pipeline.admin import run_team_action, timeline
from pipeline.models import PipelineRun
from pipeline.staff_actions import Action

RUN_HISTORY_LENGTH = 10


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "pipeline_status",
        "pipeline_error",
        "pipeline_started_at",
        "pipeline_completed_at",
    ]
    list_filter = ["pipeline_status"]
    search_fields = ["name"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    # The status is written only by pipeline.transitions (under a row lock): read-only here.
    readonly_fields = [
        "pipeline_status",
        "pipeline_error",
        "pipeline_started_at",
        "pipeline_completed_at",
        "created_at",
        "jobs",
        "run_history",
    ]
    inlines = [MembershipInline]
    actions = ["retry", "restart", "cancel"]

    @admin.display(description="Jobs")
    def jobs(self, team: Team) -> str:
        url = reverse("admin:procrastinate_procrastinatejob_changelist")
        return format_html('<a href="{}?team={}&jobs=all">this team\'s jobs</a>', url, team.pk)

    @admin.display(description="Run history (latest first)")
    def run_history(self, team: Team) -> str:
        runs = (
            PipelineRun.objects.filter(team=team)
            .order_by("-started_at", "-pk")
            .prefetch_related(Prefetch("attempts"))[:RUN_HISTORY_LENGTH]
        )
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">run {}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            (
                (
                    reverse("admin:pipeline_pipelinerun_change", args=[run.pk]),
                    run.pk,
                    run.get_kind_display(),
                    run.get_state_display(),
                    run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    timeline(run),
                    run.error,
                )
                for run in runs
            ),
        )
        if not rows:
            return "no runs yet"
        return format_html(
            "<table><tr><th>run</th><th>kind</th><th>state</th><th>started</th>"
            "<th>stages</th><th>error</th></tr>{}</table>",
            rows,
        )

    @admin.action(description="Retry from failed stage")
    def retry(self, request, queryset):
        return run_team_action(self, request, list(queryset.order_by("pk")), Action.RETRY)

    @admin.action(description="Restart pipeline")
    def restart(self, request, queryset):
        return run_team_action(self, request, list(queryset.order_by("pk")), Action.RESTART)

    @admin.action(description="Cancel pipeline")
    def cancel(self, request, queryset):
        return run_team_action(self, request, list(queryset.order_by("pk")), Action.CANCEL)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "team__name"]
    raw_id_fields = ["user", "team"]


@admin.register(GitHubConnection)
class GitHubConnectionAdmin(admin.ModelAdmin):
    list_display = ["team", "account_login", "kind", "api_url", "connected_at"]
    list_filter = ["kind"]
    search_fields = ["team__name", "account_login"]
    exclude = ["encrypted_token"]
    # A connection is made by verifying a token; staff cannot forge one without it.
    readonly_fields = ["team", "kind", "api_url", "account_login", "connected_at"]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ["full_name", "team", "selected", "is_private", "last_synced_at"]
    list_filter = ["selected", "is_private"]
    search_fields = ["full_name", "team__name"]
    raw_id_fields = ["team"]
