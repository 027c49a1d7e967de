"""What the pipeline records: runs and their stage history, the synced GitHub data, the AI
verdicts, the weekly metrics, the insights and the e-mail outbox."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import models
from django.db.models import Q

from pipeline.status import PipelineStatus


class RunKind(models.TextChoices):
    """Why a run exists. Every kind goes through the same transitions (history, invariant and
    rescue apply alike); they differ in where they start and what they send."""

    # The first full sync after the user picks repositories; ends with the completion e-mail.
    ONBOARDING = "onboarding", "Onboarding"
    # The scheduled batch: incremental sync since the last one, then the later stages; no e-mail.
    NIGHTLY = "nightly", "Nightly"
    # Detection again over what is already synced (e.g. a new marker catalogue); no sync.
    RESCORE = "rescore", "Re-score"


class PipelineRun(models.Model):
    class State(models.TextChoices):
        RUNNING = "running", "Running"
        COMPLETE = "complete", "Complete"
        FAILED = "failed", "Failed"
        SUPERSEDED = "superseded", "Superseded by a newer run"
        CANCELLED = "cancelled", "Cancelled"
        # A scheduled run that did not start because another run of the team was running; the
        # row is the run history's record of that (``error`` says which run).
        SKIPPED = "skipped", "Skipped (another run was running)"

    team = models.ForeignKey("onboarding.Team", on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=16, choices=RunKind.choices, default=RunKind.ONBOARDING)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    # The stage the run is in, or the stage it failed in while state is failed.
    stage = models.CharField(max_length=32, choices=PipelineStatus.choices)
    repository_ids = models.JSONField(default=list)
    # The procrastinate job that currently carries the run's stage. A stage job that is not this
    # one (a stale duplicate: e.g. a rescued job whose stage was meanwhile rescheduled into a
    # new job) does nothing, so one stage never runs twice at once.
    current_job_id = models.BigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    # Live counters the progress page shows (repositories_done, prs_synced, prs_analysed, ...).
    progress = models.JSONField(default=dict, blank=True)
    # What the run found worth telling (repositories skipped, LLM used or not, tokens, ...).
    summary = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            # The database, not only Python, guarantees one running pipeline per team: fifty
            # concurrent "start" POSTs give exactly one run.
            models.UniqueConstraint(
                fields=["team"], condition=Q(state="running"), name="one_running_run_per_team"
            )
        ]
        ordering = ["-started_at"]
        indexes = [
            models.Index(fields=["team", "kind", "state"]),
            # The operations page: runs failed today.
            models.Index(fields=["state", "finished_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} run {self.pk} of team {self.team_id} ({self.state}, {self.stage})"


class StageAttempt(models.Model):
    """One attempt of one stage of a run: the pipeline's history, written in the same
    transactions as the status changes."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        RETRYING = "retrying", "Failed, will retry"
        FAILED = "failed", "Failed"
        RESCHEDULED = "rescheduled", "Rescheduled (rate limit)"
        CANCELLED = "cancelled", "Cancelled"

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="attempts")
    stage = models.CharField(max_length=32, choices=PipelineStatus.choices)
    attempt = models.PositiveIntegerField(default=1)
    job_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # procrastinate's attempts counter of the job when it started this attempt. With job_id it
    # identifies one execution of a job (retries reuse the id and bump the counter), which the
    # invariant check needs to tell "this execution already handed off" from "a retry runs".
    job_attempts = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    # Indexed for the operations page's last-24-hours stage figures.
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True, default="")
    counts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.stage} #{self.attempt} ({self.outcome})"


class PullRequest(models.Model):
    class State(models.TextChoices):
        OPEN = "open", "Open"
        CLOSED = "closed", "Closed"
        MERGED = "merged", "Merged"

    team = models.ForeignKey("onboarding.Team", on_delete=models.CASCADE, related_name="+")
    repository = models.ForeignKey(
        "onboarding.Repository", on_delete=models.CASCADE, related_name="pull_requests"
    )
    number = models.PositiveIntegerField()
    node_id = models.CharField(max_length=100, blank=True, default="")
    title = models.TextField()
    body = models.TextField(blank=True, default="")
    state = models.CharField(max_length=16, choices=State.choices)
    is_draft = models.BooleanField(default=False)
    author_login = models.CharField(max_length=200, blank=True, default="")
    author_is_bot = models.BooleanField(default=False)
    head_branch = models.CharField(max_length=300, blank=True, default="")
    labels = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    merged_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    first_review_at = models.DateTimeField(null=True, blank=True)
    additions = models.PositiveIntegerField(default=0)
    deletions = models.PositiveIntegerField(default=0)
    changed_files = models.PositiveIntegerField(default=0)
    # Reviews that asked for changes before the final approval.
    review_rounds = models.PositiveIntegerField(default=0)
    is_revert = models.BooleanField(default=False)
    synced_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "number"], name="pr_unique_per_repo")
        ]
        indexes = [
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["team", "merged_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.repository_id}#{self.number}"


class PullRequestCommit(models.Model):
    pull_request = models.ForeignKey(PullRequest, on_delete=models.CASCADE, related_name="commits")
    sha = models.CharField(max_length=64)
    message = models.TextField(blank=True, default="")
    authored_at = models.DateTimeField(null=True, blank=True)
    author_name = models.CharField(max_length=300, blank=True, default="")
    author_email = models.CharField(max_length=300, blank=True, default="")
    author_login = models.CharField(max_length=200, blank=True, default="")
    # [{"name": ..., "email": ...}] parsed from Co-authored-by trailers.
    co_authors = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pull_request", "sha"], name="commit_unique_per_pr")
        ]


class PullRequestReview(models.Model):
    pull_request = models.ForeignKey(PullRequest, on_delete=models.CASCADE, related_name="reviews")
    node_id = models.CharField(max_length=100)
    state = models.CharField(max_length=32)
    submitted_at = models.DateTimeField(null=True, blank=True)
    reviewer_login = models.CharField(max_length=200, blank=True, default="")
    reviewer_is_bot = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["pull_request", "node_id"], name="review_unique_per_pr")
        ]


class AIVerdict(models.Model):
    """Whether a PR was AI-assisted, and why: the evidence a user can read."""

    class Source(models.TextChoices):
        SIGNATURE = "signature", "Signature"
        LLM = "llm", "LLM"
        NONE = "none", "No evidence"

    pull_request = models.OneToOneField(
        PullRequest, on_delete=models.CASCADE, related_name="ai_verdict"
    )
    team = models.ForeignKey("onboarding.Team", on_delete=models.CASCADE, related_name="+")
    is_ai_assisted = models.BooleanField(default=False)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.NONE)
    tools = models.JSONField(default=list, blank=True)
    # [{"tool": ..., "marker": ..., "evidence": ...}]
    signature_hits = models.JSONField(default=list, blank=True)
    catalogue_version = models.CharField(max_length=32, blank=True, default="")
    # The LLM's answer, cached by (content hash, prompt version) so a retried stage pays once.
    llm_assisted = models.BooleanField(null=True, blank=True)
    llm_tools = models.JSONField(default=list, blank=True)
    llm_confidence = models.FloatField(null=True, blank=True)
    llm_reason = models.TextField(blank=True, default="")
    llm_content_hash = models.CharField(max_length=64, blank=True, default="")
    llm_prompt_version = models.CharField(max_length=32, blank=True, default="")
    llm_error = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)


class WeeklyMetric(models.Model):
    """One ISO week (Monday start) of one team, or of one member when member_login is set, as
    computed by one run's metrics stage. A team keeps the rows of its latest completed run
    (what the dashboard shows) next to those of the run in progress, until that one
    completes (pipeline.scope)."""

    team = models.ForeignKey("onboarding.Team", on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(
        PipelineRun, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    week_start = models.DateField()
    member_login = models.CharField(max_length=200, blank=True, default="")
    prs_opened = models.PositiveIntegerField(default=0)
    prs_merged = models.PositiveIntegerField(default=0)
    ai_prs_merged = models.PositiveIntegerField(default=0)
    ai_share = models.FloatField(null=True, blank=True)
    cycle_time_median_hours = models.FloatField(null=True, blank=True)
    cycle_time_p75_hours = models.FloatField(null=True, blank=True)
    ai_cycle_time_median_hours = models.FloatField(null=True, blank=True)
    human_cycle_time_median_hours = models.FloatField(null=True, blank=True)
    first_review_median_hours = models.FloatField(null=True, blank=True)
    review_rounds_avg = models.FloatField(null=True, blank=True)
    pr_size_median = models.FloatField(null=True, blank=True)
    ai_pr_size_median = models.FloatField(null=True, blank=True)
    human_pr_size_median = models.FloatField(null=True, blank=True)
    reverts = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "week_start", "member_login"], name="weekly_metric_unique_per_run"
            )
        ]
        ordering = ["week_start"]


class Insight(models.Model):
    class Severity(models.TextChoices):
        INFO = "info", "Info"
        POSITIVE = "positive", "Positive"
        WARNING = "warning", "Warning"

    team = models.ForeignKey("onboarding.Team", on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(PipelineRun, on_delete=models.SET_NULL, null=True, related_name="+")
    kind = models.CharField(max_length=64)
    headline = models.CharField(max_length=300)
    detail = models.TextField()
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.INFO)
    numbers = models.JSONField(default=dict, blank=True)
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["position", "id"]


class EmailOutbox(models.Model):
    """An e-mail to send exactly once, written in the pipeline's own transaction."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    run = models.OneToOneField(PipelineRun, on_delete=models.CASCADE, related_name="email")
    team = models.ForeignKey("onboarding.Team", on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    recipients = models.JSONField(default=list, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    job_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "e-mail outbox"
        verbose_name_plural = "e-mail outboxes"

    def __str__(self) -> str:
        return f"insights email for run {self.run_id} ({self.status})"


class StaffAction(models.Model):
    """The audit log: one row per staff action taken in the admin or with ``manage.py
    pipeline`` (who, when, what, on what, why, and what came of it). Written by the code that
    performs the action, never edited afterwards."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Kept as text too: the log outlives the account.
    username = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=32)
    target = models.CharField(max_length=300)
    team = models.ForeignKey(
        "onboarding.Team", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.TextField()
    outcome = models.TextField()
    succeeded = models.BooleanField()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.username} {self.action} {self.target}"


class WorkerLiveness(models.Model):
    """Each ``manage.py worker`` process's liveness lock, as the rescuer last saw it (see
    ``pipeline.liveness``). The lock itself lives in PostgreSQL (``pg_locks``); this row says
    when the worker took it (to tell "lost because the server restarted" from "lost because the
    process died") and since when a rescuer has seen it missing (the short grace that lets a
    worker whose connection was terminated take it again before anyone calls it dead)."""

    # procrastinate_workers.id (not a foreign key: procrastinate owns and deletes those rows).
    worker_id = models.BigIntegerField(primary_key=True)
    lock_acquired_at = models.DateTimeField()
    lock_missing_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"worker {self.worker_id} liveness"


def from_row(model: type[models.Model], row: dict | str) -> models.Model:
    """A model instance from ``to_jsonb`` of its table's row, as if the ORM had loaded it (the
    engine's SQL functions and the e-mail job's one read return rows that way). A row may come
    as text: Django's psycopg setup hands a jsonb column over undecoded (its JSONField decodes
    it), nested ones arrive decoded."""
    if isinstance(row, str):
        row = json.loads(row)
    fields = model._meta.concrete_fields
    return model.from_db(
        "default",
        [field.attname for field in fields],
        [field.to_python(row[field.column]) for field in fields],
    )
