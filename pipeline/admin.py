"""Staff views of the pipeline: runs with their stage history, the e-mail outbox, and the
procrastinate job list with a safe re-queue action.

Procrastinate's own "Retry Job" action re-queues any ``doing`` job, including one a live worker
is still running (the stage would then run twice at once). Ours re-queues only jobs that are
stalled (their worker stopped heartbeating) or failed, and resumes a failed stage through
``transitions.retry_pipeline`` so the team's status and the queue move together.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from procrastinate.contrib.django import models as procrastinate_models
from procrastinate.contrib.django.admin import ProcrastinateJobAdmin

from onboarding.models import Team
from pipeline import queue, rescue, transitions
from pipeline.errors import PipelineNotRetryable
from pipeline.models import EmailOutbox, PipelineRun, StageAttempt
from pipeline.stages import email as email_stage
from pipeline.status import PipelineStatus


def requeue_jobs(jobs: QuerySet) -> tuple[list[str], list[str]]:
    """Re-queue what can safely be re-queued. Returns (done, refused) descriptions."""
    done: list[str] = []
    refused: list[str] = []
    # A pipeline whose job was lost outside our code becomes failed first, so that its failed
    # job below can resume it.
    rescue.fail_stranded_runs()
    for job in jobs.order_by("id"):
        label = f"job {job.id} ({job.task_name})"
        if job.status == "doing":
            if rescue.requeue_stalled_job(job.id, job.queue_name):
                done.append(f"{label}: stalled, re-queued")
            else:
                refused.append(f"{label}: still running on a live worker")
            continue
        if job.status != "failed":
            refused.append(f"{label}: {job.status}, nothing to re-queue")
            continue
        stage = queue.STAGE_BY_TASK_NAME.get(job.task_name)
        if job.task_name == queue.EMAIL_JOB.task_name:
            outbox = EmailOutbox.objects.filter(job_id=job.id).first()
            if outbox is not None and email_stage.resend(outbox.pk):
                done.append(f"{label}: e-mail queued again")
            else:
                refused.append(f"{label}: the e-mail was already sent")
            continue
        if stage is None:
            if rescue.requeue_failed_job(job.id, job.queue_name):
                done.append(f"{label}: re-queued")
            continue
        run = PipelineRun.objects.filter(pk=(job.args or {}).get("run_id")).first()
        team = Team.objects.filter(pk=run.team_id).first() if run else None
        if (
            team is None
            or team.pipeline_status != PipelineStatus.FAILED
            or run.state != PipelineRun.State.FAILED
            or run.stage != stage
        ):
            refused.append(f"{label}: its pipeline has moved on; re-running it would do nothing")
            continue
        try:
            transitions.retry_pipeline(team, failed_job_id=job.id)
        except PipelineNotRetryable as exc:
            refused.append(f"{label}: {exc}")
        else:
            done.append(f"{label}: pipeline of {team.name} resumed at {stage}")
    return done, refused


admin.site.unregister(procrastinate_models.ProcrastinateJob)


@admin.register(procrastinate_models.ProcrastinateJob)
class PipelineJobAdmin(ProcrastinateJobAdmin):
    @admin.action(description="Re-queue stalled or failed jobs")
    def requeue(self, request: HttpRequest, queryset: QuerySet) -> None:
        done, refused = requeue_jobs(queryset)
        for line in done:
            self.message_user(request, line, messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)

    # Procrastinate's cancel/abort actions are left out on purpose: they change the queue
    # behind transitions' back and would strand a running pipeline.
    actions = [requeue]


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


@admin.register(PipelineRun)
class PipelineRunAdmin(admin.ModelAdmin):
    list_display = ["id", "team", "state", "stage", "started_at", "finished_at", "error"]
    list_filter = ["state", "stage"]
    search_fields = ["team__name"]
    readonly_fields = [
        "team",
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

    def has_add_permission(self, request) -> bool:
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
