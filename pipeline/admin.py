"""Staff views of the pipeline: runs with their stage history and timeline, the staff actions
on them (retry, restart, cancel: each through ``pipeline.transitions``, with a reason, audited),
the e-mail outbox and the read-only audit log. The job list is ``pipeline.admin_jobs``.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from onboarding.models import Team
from pipeline import admin_jobs  # noqa: F401  (registers the job list)
from pipeline.admin_reason import ask_reason
from pipeline.models import EmailOutbox, PipelineRun, StaffAction, StageAttempt
from pipeline.staff_actions import Action, act_on_team
from pipeline.stages import email as email_stage
from pipeline.status import PipelineStatus

# The admin's front page links the operators' pages (live operations, stalled jobs, audit).
admin.site.index_template = "admin/pipeline/index.html"

OUTCOME_COLOURS = {
    StageAttempt.Outcome.SUCCEEDED: "#3c8d40",
    StageAttempt.Outcome.RUNNING: "#417690",
    StageAttempt.Outcome.RETRYING: "#c49a00",
    StageAttempt.Outcome.RESCHEDULED: "#c49a00",
    StageAttempt.Outcome.FAILED: "#ba2121",
    StageAttempt.Outcome.CANCELLED: "#777777",
}


def timeline(run: PipelineRun) -> str:
    """One run's attempts as a bar, each segment as wide as its share of the time, with the
    stage, outcome and duration in its tooltip and label. ``run.attempts`` may be prefetched."""
    attempts = list(run.attempts.all())
    if not attempts:
        return format_html("<em>{}</em>", "no stage started")
    total = sum(a.duration_ms or 0 for a in attempts) or 1
    segments = format_html_join(
        "",
        '<span title="{}" style="display:inline-block;overflow:hidden;white-space:nowrap;'
        "width:{}%;min-width:4em;background:{};color:#fff;padding:1px 3px;"
        'box-sizing:border-box;font-size:11px">{}</span>',
        (
            (
                f"{PipelineStatus(a.stage).label} #{a.attempt}: {a.get_outcome_display()}"
                + (f" - {a.error}" if a.error else ""),
                max(1, round(100 * (a.duration_ms or 0) / total)),
                OUTCOME_COLOURS.get(a.outcome, "#777"),
                f"{a.stage} {_duration(a.duration_ms)}",
            )
            for a in attempts
        ),
    )
    return format_html('<div style="display:flex;width:32em">{}</div>', segments)


def _duration(ms: int | None) -> str:
    if ms is None:
        return "..."
    if ms < 1000:
        return f"{ms} ms"
    if ms < 120_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def run_team_action(model_admin, request, teams, action: str):
    """The shared body of the retry/restart/cancel actions on teams and runs."""
    reason = ask_reason(model_admin, request, teams, Action.LABELS[action])
    if not isinstance(reason, str):
        return reason
    for team in teams:
        result = act_on_team(request.user, action, team, reason)
        model_admin.message_user(
            request, result.message, messages.SUCCESS if result.succeeded else messages.WARNING
        )
    return None


class StageAttemptInline(admin.TabularInline):
    model = StageAttempt
    extra = 0
    can_delete = False
    fields = [
        "stage",
        "attempt",
        "outcome",
        "started_at",
        "duration_ms",
        "job_id",
        "counts",
        "error",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def _teams_of(runs: QuerySet) -> list[Team]:
    return list(Team.objects.filter(pk__in=runs.values("team_id")).order_by("pk"))


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "team",
        "kind",
        "state",
        "stage",
        "started_at",
        "finished_at",
        "stage_timeline",
        "error",
    ]
    list_filter = ["kind", "state", "stage"]
    list_select_related = ["team"]
    search_fields = ["team__name"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    readonly_fields = [
        "team",
        "kind",
        "stage_timeline",
        "state",
        "stage",
        "repository_ids",
        "started_at",
        "finished_at",
        "error",
        "progress",
        "summary",
    ]
    inlines = [StageAttemptInline]
    actions = ["retry", "restart", "cancel"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("attempts")

    @admin.display(description="Timeline")
    def stage_timeline(self, run: PipelineRun) -> str:
        return timeline(run)

    @admin.action(description="Retry from failed stage (the runs' teams)")
    def retry(self, request, queryset):
        return run_team_action(self, request, _teams_of(queryset), Action.RETRY)

    @admin.action(description="Restart pipeline (the runs' teams)")
    def restart(self, request, queryset):
        return run_team_action(self, request, _teams_of(queryset), Action.RESTART)

    @admin.action(description="Cancel pipeline (the runs' teams)")
    def cancel(self, request, queryset):
        return run_team_action(self, request, _teams_of(queryset), Action.CANCEL)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(StaffAction)
class StaffActionAdmin(admin.ModelAdmin):
    """The audit log: read-only, never deleted from the admin."""

    list_display = ["created_at", "username", "action", "target", "reason", "succeeded", "outcome"]
    list_filter = ["action", "succeeded"]
    search_fields = ["username", "target", "reason"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(EmailOutbox)
class EmailOutboxAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "run", "status", "attempts", "sent_at", "error"]
    list_filter = ["status"]
    readonly_fields = [
        "run",
        "team",
        "status",
        "recipients",
        "attempts",
        "error",
        "job_id",
        "created_at",
        "sent_at",
    ]

    @admin.action(description="Re-send e-mails not sent yet")
    def resend(self, request: HttpRequest, queryset: QuerySet) -> None:
        for outbox in queryset.exclude(status=EmailOutbox.Status.SENT).order_by("pk"):
            if email_stage.resend(outbox.pk):
                self.message_user(request, f"e-mail for run {outbox.run_id} queued again")

    actions = [resend]

    def has_add_permission(self, request) -> bool:
        return False
