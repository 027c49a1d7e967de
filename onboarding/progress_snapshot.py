"""The progress snapshot of a team: what the progress page, its live stream and the JSON status
endpoint show.

Two views side by side, so a disagreement is visible instead of hidden:
- the database's view: the team's status, the run, each stage's state and elapsed time (from the
  ``StageAttempt`` history), the live counters stages report into ``PipelineRun.progress``;
- the queue's view: the procrastinate job of the run's current stage (todo/doing/failed,
  attempts, its worker alive or not).

Counters the page knows (stages report them with ``pipeline.progress.report``):
``repositories_done``/``repositories_total``, ``prs_synced``, ``prs_analysed``/``prs_to_analyse``,
``weeks_computed``, ``llm_classified``/``llm_to_classify``, ``current_repository`` and
``message`` (one short user-facing note). Notes also come from the run's summary: repositories
the sync skipped, and the detection stage's word that no LLM was configured. A stage whose
returned counts contain ``"skipped": True`` is shown as skipped.

"Processing is delayed" (``Delay``: no worker, a stalled stage, a rate-limit wait) is worked out
in ``onboarding.progress_delay``.

Everything here is read with the team as the filter: callers pass the viewer's own team id.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone
from procrastinate.contrib.django.models import ProcrastinateJob, ProcrastinateWorker

from onboarding.github import needs_reconnect
from onboarding.models import Team
from onboarding.progress_delay import Delay, delay_for
from pipeline import rescue
from pipeline.models import PipelineRun, StageAttempt
from pipeline.queue import STAGE_JOBS
from pipeline.status import STAGE_ORDER, PipelineStatus

# Statuses after which the page stops listening (the stream sends `done`, polling gets 286).
# not_started is left out on purpose: a page opened just before the start must see it begin.
FINISHED_STATUSES = frozenset({PipelineStatus.COMPLETE, PipelineStatus.FAILED})


class StageState:
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class StageProgress:
    stage: str
    label: str
    state: str
    attempts: int
    elapsed_seconds: float | None
    # Why a running stage is waiting (a retry after an error, a rate-limit reschedule) or why it
    # failed: the user-facing text recorded on its latest attempt.
    note: str = ""

    @property
    def elapsed_display(self) -> str:
        return format_duration(self.elapsed_seconds)

    def as_json(self) -> dict:
        return {
            "stage": self.stage,
            "label": self.label,
            "state": self.state,
            "attempts": self.attempts,
            "elapsed_seconds": self.elapsed_seconds,
            "note": self.note,
        }


@dataclass(frozen=True)
class Counters:
    repositories_done: int | None = None
    repositories_total: int | None = None
    prs_synced: int | None = None
    prs_analysed: int | None = None
    prs_to_analyse: int | None = None
    weeks_computed: int | None = None
    llm_classified: int | None = None
    llm_to_classify: int | None = None
    current_repository: str = ""
    message: str = ""

    @classmethod
    def from_progress(cls, progress: dict) -> Counters:
        def number(key: str) -> int | None:
            value = progress.get(key)
            try:
                return None if value is None else int(value)
            except (TypeError, ValueError):
                return None

        return cls(
            repositories_done=number("repositories_done"),
            repositories_total=number("repositories_total"),
            prs_synced=number("prs_synced"),
            prs_analysed=number("prs_analysed"),
            prs_to_analyse=number("prs_to_analyse"),
            weeks_computed=number("weeks_computed"),
            llm_classified=number("llm_classified"),
            llm_to_classify=number("llm_to_classify"),
            current_repository=str(progress.get("current_repository") or ""),
            message=str(progress.get("message") or ""),
        )


@dataclass(frozen=True)
class QueueView:
    """The procrastinate job of the run's current stage, as the queue sees it."""

    job_id: int | None = None
    task_name: str = ""
    status: str = ""
    attempts: int = 0
    scheduled_at: datetime.datetime | None = None
    worker_id: int | None = None
    # For a job in `doing`: it is not stalled (pipeline.rescue's rule). Otherwise: some worker
    # heartbeats.
    worker_alive: bool = False
    live_workers: int = 0
    stalled: bool = False

    def as_json(self) -> dict:
        return {
            "job_id": self.job_id,
            "task_name": self.task_name or None,
            "status": self.status or None,
            "attempts": self.attempts,
            "scheduled_at": self.scheduled_at.isoformat() if self.scheduled_at else None,
            "worker_id": self.worker_id,
            "worker_alive": self.worker_alive,
            "live_workers": self.live_workers,
            "stalled": self.stalled,
        }


@dataclass(frozen=True)
class ProgressSnapshot:
    team_id: int
    team_name: str
    status: str
    status_label: str
    error: str
    run_id: int | None
    run_state: str
    run_stage: str
    started_at: datetime.datetime | None
    completed_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    stages: list[StageProgress]
    counters: Counters
    progress: dict
    notes: list[str]
    last_activity_at: datetime.datetime | None
    delayed: bool
    queue: QueueView
    mismatch: str
    taken_at: datetime.datetime = field(default_factory=timezone.now)
    delay: Delay | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def is_running(self) -> bool:
        return self.status in STAGE_ORDER

    @property
    def is_complete(self) -> bool:
        return self.status == PipelineStatus.COMPLETE

    @property
    def is_failed(self) -> bool:
        return self.status == PipelineStatus.FAILED

    @property
    def needs_reconnect(self) -> bool:
        """A failure only a new GitHub connection fixes: the page links to it."""
        return self.is_failed and needs_reconnect(self.error)

    @property
    def elapsed_display(self) -> str:
        if self.started_at is None:
            return ""
        end = self.finished_at or self.taken_at
        return format_duration((end - self.started_at).total_seconds())

    def as_json(self) -> dict:
        """The database's view next to the queue's view (the JSON status endpoint)."""

        def iso(value: datetime.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "team": self.team_id,
            "database": {
                "status": self.status,
                "status_label": self.status_label,
                "error": self.error,
                "run": self.run_id,
                "run_state": self.run_state or None,
                "stage": self.run_stage or None,
                "started_at": iso(self.started_at),
                "completed_at": iso(self.completed_at),
                "finished_at": iso(self.finished_at),
                "stages": [stage.as_json() for stage in self.stages],
                "progress": self.progress,
                "notes": self.notes,
                "last_activity_at": iso(self.last_activity_at),
                "delayed": self.delayed,
                "delay": self.delay.as_json() if self.delay else None,
            },
            "queue": self.queue.as_json(),
            "mismatch": self.mismatch or None,
            "taken_at": iso(self.taken_at),
        }


def _current_run(team_id: int) -> PipelineRun | None:
    # The newest run is the one the page is about: older ones are complete or superseded.
    return PipelineRun.objects.filter(team_id=team_id).order_by("-started_at", "-id").first()


def _stage_states(
    run: PipelineRun | None, attempts: list[StageAttempt], now: datetime.datetime
) -> list[StageProgress]:
    by_stage: dict[str, list[StageAttempt]] = {stage: [] for stage in STAGE_ORDER}
    for attempt in attempts:
        by_stage.setdefault(attempt.stage, []).append(attempt)

    if run is None:
        current_index = -1
    elif run.stage in STAGE_ORDER:
        current_index = STAGE_ORDER.index(run.stage)
    else:  # complete: every stage is behind the run
        current_index = len(STAGE_ORDER)

    stages = []
    for index, stage in enumerate(STAGE_ORDER):
        stage_attempts = by_stage[stage]
        note = ""
        if run is None or index > current_index:
            state = StageState.WAITING
        elif index < current_index:
            succeeded = [a for a in stage_attempts if a.outcome == StageAttempt.Outcome.SUCCEEDED]
            if not succeeded or (succeeded[-1].counts or {}).get("skipped"):
                state = StageState.SKIPPED
            else:
                state = StageState.DONE
        elif run.state == PipelineRun.State.RUNNING:
            state = StageState.RUNNING
            latest = stage_attempts[-1] if stage_attempts else None
            if latest is not None and latest.outcome in (
                StageAttempt.Outcome.RETRYING,
                StageAttempt.Outcome.RESCHEDULED,
            ):
                note = latest.error
        else:
            state = StageState.FAILED
            note = run.error or (stage_attempts[-1].error if stage_attempts else "")

        elapsed = None
        if stage_attempts:
            first_start = stage_attempts[0].started_at
            if state == StageState.RUNNING:
                end = now
            else:
                end = max((a.finished_at or a.started_at) for a in stage_attempts)
            elapsed = max(0.0, (end - first_start).total_seconds())
        stages.append(
            StageProgress(
                stage=stage,
                label=PipelineStatus(stage).label,
                state=state,
                attempts=len(stage_attempts),
                elapsed_seconds=elapsed,
                note=note,
            )
        )
    return stages


def _stage_job(
    run: PipelineRun, task_name: str, attempts: list[StageAttempt]
) -> ProcrastinateJob | None:
    """The run's job for its current stage: the live one (todo/doing) if any, else the job of
    the stage's latest attempt. Both lookups use indexes (procrastinate's partial index on live
    jobs, the primary key), so the queue's growing history does not slow the page down."""
    jobs = ProcrastinateJob.objects.select_related("worker")
    live = (
        jobs.filter(status__in=["todo", "doing"], task_name=task_name, args__run_id=run.pk)
        .order_by("-id")
        .first()
    )
    if live is not None:
        return live
    job_ids = [a.job_id for a in attempts if a.stage == run.stage and a.job_id]
    return jobs.filter(pk=job_ids[-1]).first() if job_ids else None


def _queue_view(
    run: PipelineRun | None, attempts: list[StageAttempt], now: datetime.datetime
) -> QueueView:
    alive_since = now - datetime.timedelta(seconds=settings.PIPELINE_STALLED_AFTER_SECONDS)
    live_workers = ProcrastinateWorker.objects.filter(last_heartbeat__gte=alive_since).count()
    spec = STAGE_JOBS.get(run.stage) if run is not None else None
    if spec is None:  # no run, or a complete run: no stage job to look at
        return QueueView(worker_alive=live_workers > 0, live_workers=live_workers)
    job = _stage_job(run, spec.task_name, attempts)
    if job is None:
        return QueueView(
            task_name=spec.task_name, worker_alive=live_workers > 0, live_workers=live_workers
        )
    stalled = job.status == "doing" and job.pk in rescue.stalled_job_ids()
    worker_alive = not stalled if job.status == "doing" else live_workers > 0
    return QueueView(
        job_id=job.pk,
        task_name=job.task_name,
        status=job.status,
        attempts=job.attempts,
        scheduled_at=job.scheduled_at,
        worker_id=job.worker_id,
        worker_alive=worker_alive,
        live_workers=live_workers,
        stalled=stalled,
    )


def _mismatch(team: Team, run: PipelineRun | None, queue: QueueView) -> str:
    """A sentence when the database and the queue disagree, else ''."""
    status = team.pipeline_status
    if status in STAGE_ORDER:
        label = PipelineStatus(status).label.lower()
        if run is None or run.state != PipelineRun.State.RUNNING or run.stage != status:
            return f"The team is {label} but its run does not say so."
        if queue.job_id is None:
            return f"The team is {label} but no job is queued for that stage."
        if queue.status not in ("todo", "doing"):
            return f"The team is {label} but the stage's job is {queue.status}."
        if queue.stalled:
            return "The worker running this stage stopped; the job will be re-queued."
        return ""
    if status == PipelineStatus.FAILED and queue.status == "todo":
        return "The pipeline has failed but its stage job is still queued."
    return ""


def _last_activity(
    run: PipelineRun | None, attempts: list[StageAttempt], queue: QueueView
) -> datetime.datetime | None:
    if run is None:
        return None
    moments = [run.started_at]
    for attempt in attempts:
        moments.append(attempt.started_at)
        if attempt.finished_at:
            moments.append(attempt.finished_at)
    if queue.status == "doing" and queue.worker_id is not None:
        # A stage reports progress only while its worker lives; the worker's last heartbeat
        # bounds the last progress it can have made.
        heartbeat = (
            ProcrastinateWorker.objects.filter(pk=queue.worker_id)
            .values_list("last_heartbeat", flat=True)
            .first()
        )
        if heartbeat:
            moments.append(heartbeat)
    return max(moments)


def _notes(run: PipelineRun | None, counters: Counters) -> list[str]:
    """Short user-facing sentences about the run: what it skipped or did without."""
    if run is None:
        return []
    notes = [counters.message] if counters.message else []
    summary = run.summary or {}
    for skipped in summary.get("skipped_repositories") or []:
        name = skipped.get("full_name") or "a repository"
        reason = skipped.get("reason") or "skipped"
        notes.append(f"Skipped {name}: {reason}.")
    llm = summary.get("llm") or {}
    if llm.get("configured") is False and llm.get("message"):
        notes.append(str(llm["message"]))
    return notes


def build_snapshot(team_id: int) -> ProgressSnapshot:
    """Read the progress of ``team_id`` from the database (a handful of small queries)."""
    now = timezone.now()
    team = Team.objects.get(pk=team_id)
    run = _current_run(team_id)
    attempts = list(run.attempts.order_by("started_at", "id")) if run is not None else []
    queue = _queue_view(run, attempts, now)
    last_activity = _last_activity(run, attempts, queue)
    delay = delay_for(team.pipeline_status, attempts, queue, last_activity, now)
    progress = dict(run.progress or {}) if run is not None else {}
    counters = Counters.from_progress(progress)
    return ProgressSnapshot(
        team_id=team.pk,
        team_name=team.name,
        status=team.pipeline_status,
        status_label=PipelineStatus(team.pipeline_status).label,
        error=team.pipeline_error,
        run_id=run.pk if run else None,
        run_state=run.state if run else "",
        run_stage=run.stage if run else "",
        started_at=team.pipeline_started_at,
        completed_at=team.pipeline_completed_at,
        finished_at=run.finished_at if run and not run.state == PipelineRun.State.RUNNING else None,
        stages=_stage_states(run, attempts, now),
        counters=counters,
        progress=progress,
        notes=_notes(run, counters),
        last_activity_at=last_activity,
        delayed=delay is not None,
        queue=queue,
        mismatch=_mismatch(team, run, queue),
        taken_at=now,
        delay=delay,
    )
