"""Admin for teams, members, GitHub connections and repositories. The encrypted token is
excluded from every form and list: staff see which account is connected, never its token."""

from __future__ import annotations

from django.contrib import admin

from onboarding.models import GitHubConnection, Membership, Repository, Team


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "pipeline_status", "pipeline_started_at", "pipeline_completed_at"]
    list_filter = ["pipeline_status"]
    search_fields = ["name"]
    # The status is written only by pipeline.transitions (under a row lock): read-only here.
    readonly_fields = [
        "pipeline_status",
        "pipeline_error",
        "pipeline_started_at",
        "pipeline_completed_at",
        "created_at",
    ]
    inlines = [MembershipInline]


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
