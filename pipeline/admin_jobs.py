"""The job list for operators, replacing procrastinate's own job admin.

What an operator needs at a glance: which team, stage and run a job belongs to, and whether a
``doing`` job is really running or **stalled** (its worker is dead). Stalled is decided by
``pipeline.rescue.stalled_job_ids()`` only, the rule the rescuer uses; this page never has its
own. Re-queue acts only on stalled or failed jobs, through ``pipeline.rescue`` and
``pipeline.transitions`` (never a job a live worker runs), asks for a reason and writes the
audit log.

Built for a job table of a million rows: no ``COUNT(*)`` (the paginator reads the planner's
estimate, counting exactly only small results), no per-row queries (team, run and first-event
time are subqueries of the one page query; the stalled set is one query per page), and every
filter is an indexed column or expression (see migration 0004). Housekeeping jobs (rescuer,
retention) are hidden unless the "Jobs" filter asks for them.
"""

from __future__ import annotations

import json
from functools import cached_property

from django.contrib import admin, messages
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    Min,
    OuterRef,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from procrastinate.contrib.django import models as procrastinate_models
from procrastinate.contrib.django.admin import ProcrastinateJobAdmin

from onboarding.models import Team
from pipeline import queue, rescue, transitions
from pipeline.admin_reason import ask_reason
from pipeline.errors import PipelineNotRetryable
from pipeline.models import EmailOutbox, PipelineRun
from pipeline.staff_actions import Action, Result, record
from pipeline.stages import email as email_stage
from pipeline.status import PipelineStatus

Job = procrastinate_models.ProcrastinateJob

# Jobs that are the product's work; anything else (rescuer, retention, periodic ticks) is
# housekeeping, hidden by default.
PRODUCT_TASKS: dict[str, str] = {
    **{spec.task_name: PipelineStatus(stage).label for stage, spec in queue.STAGE_JOBS.items()},
    queue.EMAIL_JOB.task_name: "Completion e-mail",
    "pipeline.nightly.fan_out": "Nightly batch (fan-out)",
}
# Counting exactly is cheap below this many (estimated) rows; above it the estimate is shown.
EXACT_COUNT_BELOW = 10_000


class EstimatedCountPaginator(Paginator):
    """The planner's row estimate instead of ``COUNT(*)`` over a big job table."""

    @cached_property
    def count(self) -> int:
        compiler = self.object_list.query.get_compiler(using=self.object_list.db)
        try:
            sql, params = compiler.as_sql()
        except EmptyResultSet:  # e.g. the Stalled filter when nothing is stalled
            return 0
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        estimate = int(plan[0]["Plan"]["Plan Rows"])
        if estimate >= EXACT_COUNT_BELOW:
            return estimate
        return self.object_list.count()


class StalledFilter(admin.SimpleListFilter):
    title = "liveness"
    parameter_name = "liveness"

    def lookups(self, request, model_admin):
        return [("stalled", "Stalled (worker dead)"), ("requeueable", "Stalled or failed")]

    def queryset(self, request, queryset):
        if self.value() == "stalled":
            return queryset.filter(id__in=_stalled_ids(request))
        if self.value() == "requeueable":
            return queryset.filter(id__in=_stalled_ids(request)) | queryset.filter(status="failed")
        return queryset


class JobKindFilter(admin.SimpleListFilter):
    title = "jobs"
    parameter_name = "jobs"

    def lookups(self, request, model_admin):
        return [("all", "Including housekeeping")]

    def queryset(self, request, queryset):
        if self.value() == "all":
            return queryset
        return queryset.filter(task_name__in=list(PRODUCT_TASKS))


class StageFilter(admin.SimpleListFilter):
    title = "stage"
    parameter_name = "stage"

    def lookups(self, request, model_admin):
        return list(PRODUCT_TASKS.items())

    def queryset(self, request, queryset):
        return queryset.filter(task_name=self.value()) if self.value() else queryset


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        names = sorted({spec.queue for spec in queue.STAGE_JOBS.values()} | {"default"})
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        return queryset.filter(queue_name=self.value()) if self.value() else queryset


class TeamFilter(admin.SimpleListFilter):
    """By team: the teams with a running pipeline are offered (a handful, not 10,000); any
    team's jobs are reachable with ``?team=<id>`` (linked from the team's page)."""

    title = "team"
    parameter_name = "team"

    def lookups(self, request, model_admin):
        teams = list(
            Team.objects.filter(runs__state=PipelineRun.State.RUNNING)
            .order_by("name")
            .values_list("pk", "name")[:30]
        )
        value = self.value()
        if value and value.isdigit() and int(value) not in {pk for pk, _ in teams}:
            teams += list(Team.objects.filter(pk=int(value)).values_list("pk", "name"))
        return [(str(pk), name) for pk, name in teams]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            return queryset.none()
        runs = PipelineRun.objects.filter(team_id=int(value)).values("pk")
        return queryset.filter(run_id__in=Subquery(runs))


def _stalled_ids(request: HttpRequest) -> set[int]:
    """One query per request, whatever the page shows."""
    if not hasattr(request, "_stalled_job_ids"):
        request._stalled_job_ids = rescue.stalled_job_ids()
    return request._stalled_job_ids


def requeue_job(job: Job) -> tuple[Result, int | None]:
    """Re-queue one job if that is safe; returns the result and the job's team id."""
    label = f"job {job.id} ({PRODUCT_TASKS.get(job.task_name, job.task_name)})"
    run = PipelineRun.objects.filter(pk=(job.args or {}).get("run_id")).first()
    team_id = run.team_id if run else None
    if job.status == "doing":
        if rescue.requeue_stalled_job(job.id, job.queue_name):
            return Result(True, f"{label}: stalled, re-queued"), team_id
        return Result(False, f"{label}: still running on a live worker; left alone"), team_id
    if job.status == "aborted" and job.task_name in queue.STAGE_BY_TASK_NAME:
        # How a rescue ends a dead worker's stage job: a new job carries the stage now.
        return Result(False, f"{label}: superseded by a newer job; nothing to re-queue"), team_id
    if job.status != "failed":
        return Result(False, f"{label}: {job.status}, nothing to re-queue"), team_id
    if job.task_name == queue.EMAIL_JOB.task_name:
        outbox = EmailOutbox.objects.filter(job_id=job.id).first()
        if outbox is not None and email_stage.resend(outbox.pk):
            return Result(True, f"{label}: e-mail queued again"), outbox.team_id
        return Result(False, f"{label}: the e-mail was already sent"), team_id
    stage = queue.STAGE_BY_TASK_NAME.get(job.task_name)
    if stage is None:
        if rescue.requeue_failed_job(job.id, job.queue_name):
            return Result(True, f"{label}: re-queued"), team_id
        return Result(False, f"{label}: no longer failed"), team_id
    team = Team.objects.filter(pk=team_id).first()
    if (
        team is None
        or team.pipeline_status != PipelineStatus.FAILED
        or run.state != PipelineRun.State.FAILED
        or run.stage != stage
    ):
        return (
            Result(False, f"{label}: its pipeline has moved on; re-running it would do nothing"),
            team_id,
        )
    try:
        transitions.retry_pipeline(team, failed_job_id=job.id)
    except PipelineNotRetryable as exc:
        return Result(False, f"{label}: {exc}"), team_id
    return Result(True, f"{label}: pipeline of {team.name} resumed at {stage}"), team_id


def requeue_jobs(jobs: QuerySet, *, actor=None, reason: str = "") -> list[Result]:
    """Re-queue what can safely be re-queued, each result audited when ``reason`` is given."""
    # A pipeline whose job was lost outside our code becomes failed first, so that its failed
    # job below can resume it.
    rescue.fail_stranded_runs()
    results = []
    for job in Job.objects.filter(pk__in=[j.pk for j in jobs]).order_by("id"):
        result, team_id = requeue_job(job)
        results.append(result)
        if reason:
            record(actor, Action.REQUEUE, f"job {job.id}", reason, result, team=team_id)
    return results


admin.site.unregister(Job)


@admin.register(Job)
class PipelineJobAdmin(ProcrastinateJobAdmin):
    list_display = [
        "id",
        "state",
        "team",
        "stage",
        "run",
        "attempts",
        "worker_liveness",
        "age",
        "scheduled_at",
    ]
    list_filter = [StalledFilter, "status", TeamFilter, StageFilter, QueueFilter, JobKindFilter]
    list_select_related = ["worker"]
    list_per_page = 50
    show_full_result_count = False
    # Facet counts would be one COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    ordering = ["-id"]
    # Procrastinate's cancel/abort/retry actions are left out on purpose: they change the queue
    # behind transitions' back and would strand a running pipeline or run a stage twice.
    actions = ["requeue"]

    def get_queryset(self, request):
        stalled = _stalled_ids(request)
        runs = PipelineRun.objects.filter(pk=OuterRef("run_id"))
        return (
            Job.objects.annotate(
                run_id=Cast(KT("args__run_id"), BigIntegerField()),
                team_id=Subquery(runs.values("team_id")[:1]),
                team_name=Subquery(runs.values("team__name")[:1]),
                deferred_at=Subquery(
                    procrastinate_models.ProcrastinateEvent.objects.filter(job_id=OuterRef("pk"))
                    .values("job_id")
                    .annotate(first=Min("at"))
                    .values("first")[:1]
                ),
                is_stalled=Case(
                    When(id__in=stalled, then=Value(True)),
                    default=Value(False),
                    output_field=BooleanField(),
                )
                if stalled
                else Value(False, output_field=BooleanField()),
            )
            .select_related("worker")
            .order_by("-id")
        )

    @admin.display(description="State", ordering="status")
    def state(self, job: Job) -> str:
        if job.is_stalled:
            return format_html(
                '<strong style="color:#ba2121" title="{}">Stalled</strong>',
                "doing, but its worker is dead",
            )
        return job.status.title()

    @admin.display(description="Team")
    def team(self, job: Job) -> str:
        if job.team_id is None:
            return "-"
        url = reverse("admin:onboarding_team_change", args=[job.team_id])
        return format_html('<a href="{}">{}</a>', url, job.team_name)

    @admin.display(description="Stage")
    def stage(self, job: Job) -> str:
        return PRODUCT_TASKS.get(job.task_name, job.task_name)

    @admin.display(description="Run")
    def run(self, job: Job) -> str:
        if job.team_id is None:
            return "-"
        url = reverse("admin:pipeline_pipelinerun_change", args=[job.run_id])
        return format_html('<a href="{}">run {}</a>', url, job.run_id)

    @admin.display(description="Worker")
    def worker_liveness(self, job: Job) -> str:
        if job.worker is None:
            return "-"
        beat = timesince(job.worker.last_heartbeat, timezone.now())
        return f"{job.worker_id} (heartbeat {beat} ago)"

    @admin.display(description="Age")
    def age(self, job: Job) -> str:
        return timesince(job.deferred_at, timezone.now()) if job.deferred_at else "-"

    @admin.action(description="Re-queue stalled or failed jobs")
    def requeue(self, request: HttpRequest, queryset: QuerySet):
        reason = ask_reason(self, request, queryset, "Re-queue stalled or failed jobs")
        if not isinstance(reason, str):
            return reason  # the form asking for it
        for result in requeue_jobs(queryset, actor=request.user, reason=reason):
            level = messages.SUCCESS if result.succeeded else messages.WARNING
            self.message_user(request, result.message, level)
        return None
