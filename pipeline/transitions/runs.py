"""A run's lifecycle: start an onboarding (the user's selection) or another kind of run, record
a run that did not start, resume a failed run from its failed stage, cancel, restart. Starts are
serialised by the team row lock (backed by the partial unique index on running runs), so one
team never has two running runs. See the package docstring for the invariant."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from onboarding.models import Repository, Team
from pipeline import notify, queue
from pipeline.errors import InvalidSelection, PipelineNotRetryable, PipelineNotRunning
from pipeline.models import PipelineRun, RunKind, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from pipeline.transitions._common import _finish_attempt, _lock_team, _parse_ids, job_priority


def start_pipeline(team: Team, repository_ids: Iterable) -> PipelineRun:
    """Start the onboarding pipeline for ``team`` on the given repositories (their pks).

    A start while a run is already running returns that run (double clicks, concurrent POSTs):
    the team row lock serialises starts, and the partial unique index on running runs backs it
    up in the database. Ids that are not the team's repositories raise InvalidSelection and
    enqueue nothing.
    """
    ids = _parse_ids(repository_ids)
    if not ids:
        raise InvalidSelection("Select at least one repository.")
    try:
        with transaction.atomic():
            team = _lock_team(team.pk)
            running = PipelineRun.objects.filter(team=team, state=PipelineRun.State.RUNNING).first()
            if running is not None:
                return running
            owned = set(
                Repository.objects.filter(team=team, pk__in=ids).values_list("pk", flat=True)
            )
            if owned != set(ids):
                # Never say which ids belong to someone else: only that they are not ours.
                raise InvalidSelection(
                    "Some of the selected repositories are not available to your team. "
                    "Reload the list and select again."
                )
            Repository.objects.filter(team=team).exclude(pk__in=ids).update(selected=False)
            Repository.objects.filter(team=team, pk__in=ids).update(selected=True)
            PipelineRun.objects.filter(team=team, state=PipelineRun.State.FAILED).update(
                state=PipelineRun.State.SUPERSEDED
            )
            now = timezone.now()
            run = PipelineRun.objects.create(
                team=team,
                stage=PipelineStatus.SYNCING,
                repository_ids=ids,
                started_at=now,
                progress={"repositories_total": len(ids), "repositories_done": 0},
            )
            run.current_job_id = queue.defer_stage(PipelineStatus.SYNCING, run_id=run.pk)
            run.save(update_fields=["current_job_id"])
            team.pipeline_status = PipelineStatus.SYNCING
            team.pipeline_error = ""
            team.pipeline_started_at = now
            team.pipeline_completed_at = None
            team.save(
                update_fields=[
                    "pipeline_status",
                    "pipeline_error",
                    "pipeline_started_at",
                    "pipeline_completed_at",
                ]
            )
            notify.publish(
                team_id=team.pk, run_id=run.pk, status=team.pipeline_status, event="started"
            )
            return run
    except IntegrityError:
        # Only reachable if something bypassed the row lock; the index still holds the line.
        return PipelineRun.objects.get(team_id=team.pk, state=PipelineRun.State.RUNNING)


def retry_pipeline(team: Team, *, failed_job_id: int | None = None) -> PipelineRun:
    """Resume a failed pipeline from the stage that failed (not from scratch).

    ``failed_job_id`` (the admin's re-queue of a failed stage job) must be a failed job of this
    run's failed stage; the stage then runs in a new job with a full retry budget."""
    with transaction.atomic():
        team = _lock_team(team.pk)
        if team.pipeline_status != PipelineStatus.FAILED:
            raise PipelineNotRetryable("Only a failed pipeline can be retried.")
        run = (
            PipelineRun.objects.filter(team=team, state=PipelineRun.State.FAILED)
            .order_by("-started_at")
            .first()
        )
        if run is None or run.stage not in STAGE_ORDER:
            raise PipelineNotRetryable("There is no failed run to resume; start a new one.")
        if failed_job_id is not None:
            if not queue.is_failed_stage_job(failed_job_id, run_id=run.pk, stage=run.stage):
                raise PipelineNotRetryable(
                    f"Job {failed_job_id} is not a failed {run.stage} job of this run."
                )
        # Always a new job, even when staff resume from a failed one: re-queueing that job would
        # inherit its spent attempts counter, leaving the resumed stage no retries.
        run.current_job_id = queue.defer_stage(run.stage, run_id=run.pk, priority=job_priority(run))
        run.state = PipelineRun.State.RUNNING
        run.error = ""
        run.finished_at = None
        run.save(update_fields=["state", "error", "finished_at", "current_job_id"])
        team.pipeline_status = run.stage
        team.pipeline_error = ""
        team.save(update_fields=["pipeline_status", "pipeline_error"])
        notify.publish(team_id=team.pk, run_id=run.pk, status=run.stage, event="retried")
        return run


# --- Run kinds, cancel and restart ----------------------------------------------------------
#
# Every kind of run is the same state machine: a run row, the team's status, one live job for
# the current stage. Kinds differ only in their first stage and in whether completion e-mails.

FIRST_STAGE: dict[str, str] = {
    RunKind.ONBOARDING: PipelineStatus.SYNCING,
    RunKind.NIGHTLY: PipelineStatus.SYNCING,
    RunKind.RESCORE: PipelineStatus.LLM_PROCESSING,
}

CANCELLED_MESSAGE = "Cancelled by staff: {reason}"
RESTARTED_MESSAGE = "Stopped to restart the pipeline from the beginning."


def _running_run(team: Team) -> PipelineRun | None:
    return PipelineRun.objects.filter(team=team, state=PipelineRun.State.RUNNING).first()


def _new_run(team: Team, kind: str, repository_ids: list[int], now: datetime.datetime):
    """Create a running run of ``kind`` at its first stage, queue that stage's job and move the
    team's status there. The caller holds the team lock and has checked nothing runs."""
    stage = FIRST_STAGE[kind]
    PipelineRun.objects.filter(team=team, state=PipelineRun.State.FAILED).update(
        state=PipelineRun.State.SUPERSEDED
    )
    run = PipelineRun.objects.create(
        team=team,
        kind=kind,
        stage=stage,
        repository_ids=repository_ids,
        started_at=now,
        progress={"repositories_total": len(repository_ids), "repositories_done": 0},
    )
    run.current_job_id = queue.defer_stage(stage, run_id=run.pk, priority=job_priority(run))
    run.save(update_fields=["current_job_id"])
    team.pipeline_status = stage
    team.pipeline_error = ""
    team.pipeline_started_at = now
    team.save(update_fields=["pipeline_status", "pipeline_error", "pipeline_started_at"])
    notify.publish(team_id=team.pk, run_id=run.pk, status=stage, event="started")
    return run


def _onboarded(team: Team) -> bool:
    return PipelineRun.objects.filter(
        team=team, kind=RunKind.ONBOARDING, state=PipelineRun.State.COMPLETE
    ).exists()


def start_run(team: Team, kind: str, *, repository_ids: Iterable | None = None) -> PipelineRun:
    """Start a run of ``kind``. Onboarding is ``start_pipeline`` (the user's selection).

    Nightly and re-score runs need a team whose onboarding completed (PipelineNotRetryable
    otherwise) and default to the team's selected repositories. Nightly starts at the sync
    stage, re-score at detection; neither sends the completion e-mail. When another run of the
    team is running, nothing starts: a ``skipped`` run of ``kind`` is recorded in the history
    (its ``error`` names the running run) and returned, so callers see what happened and a
    scheduled batch never collides with an onboarding or a staff-started run."""
    if kind == RunKind.ONBOARDING:
        return start_pipeline(team, repository_ids if repository_ids is not None else [])
    if kind not in FIRST_STAGE:
        raise ValueError(f"unknown run kind {kind!r}")
    with transaction.atomic():
        team = _lock_team(team.pk)
        now = timezone.now()
        running = _running_run(team)
        if running is not None:
            return record_skipped_run(
                team,
                kind,
                f"Not started: {running.get_kind_display().lower()} run {running.pk} was running.",
            )
        if not _onboarded(team):
            raise PipelineNotRetryable("The team has not completed onboarding yet.")
        selected = Repository.objects.filter(team=team, selected=True).values_list("pk", flat=True)
        ids = _parse_ids(repository_ids) if repository_ids is not None else sorted(selected)
        if not ids:
            raise InvalidSelection("The team has no selected repositories.")
        return _new_run(team, kind, ids, now)


def record_skipped_run(team: Team, kind: str, reason: str) -> PipelineRun:
    """A run of ``kind`` that did not start, for the history: the team's status, runs and queue
    are untouched (so this needs no team lock)."""
    now = timezone.now()
    return PipelineRun.objects.create(
        team=team,
        kind=kind,
        state=PipelineRun.State.SKIPPED,
        stage=FIRST_STAGE[kind],
        repository_ids=[],
        started_at=now,
        finished_at=now,
        error=reason,
    )


def _end_live_stage_jobs(run: PipelineRun) -> list[int]:
    """Cancel the run's queued stage jobs and ask a running one to abort. Returns their ids.

    A ``doing`` job cannot be stopped from here; it is flagged (procrastinate's
    ``abort_requested``) and its attempt is finished by the caller, so when its stage body
    returns, the hand-off finds the attempt no longer running and changes nothing."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id FROM procrastinate_jobs WHERE task_name = ANY(%s)"
            " AND (args ->> 'run_id')::bigint = %s AND status IN ('todo', 'doing')"
            " ORDER BY id FOR UPDATE",
            [list(queue.STAGE_BY_TASK_NAME), run.pk],
        )
        job_ids = [row[0] for row in cursor.fetchall()]
    manager = queue.job_manager()
    for job_id in job_ids:
        manager.cancel_job_by_id(job_id, abort=True)
    return job_ids


def _end_running_run(
    team: Team, run: PipelineRun, state: str, message: str, now: datetime.datetime
) -> None:
    """End ``run`` (running, team locked) as ``state``: its live jobs end with it and its
    running attempts are finished as cancelled, all in the caller's transaction."""
    _end_live_stage_jobs(run)
    for attempt in run.attempts.filter(outcome=StageAttempt.Outcome.RUNNING):
        _finish_attempt(attempt, StageAttempt.Outcome.CANCELLED, now, error=message)
    run.state = state
    run.error = message
    run.finished_at = now
    run.current_job_id = None
    run.save(update_fields=["state", "error", "finished_at", "current_job_id"])


def cancel_pipeline(team: Team, *, reason: str) -> PipelineRun:
    """Cancel the team's running run: its live job and the run end in one transaction.

    The team returns to ``complete`` when an earlier onboarding completed (its dashboard stays
    as it was), otherwise to ``not_started`` (the user can select repositories and start
    again). Raises PipelineNotRunning when nothing runs."""
    reason = reason.strip()
    if not reason:
        raise ValueError("A reason is required to cancel a pipeline.")
    with transaction.atomic():
        team = _lock_team(team.pk)
        run = _running_run(team)
        if run is None:
            raise PipelineNotRunning("The team has no running pipeline to cancel.")
        now = timezone.now()
        _end_running_run(
            team, run, PipelineRun.State.CANCELLED, CANCELLED_MESSAGE.format(reason=reason), now
        )
        team.pipeline_status = (
            PipelineStatus.COMPLETE if _onboarded(team) else PipelineStatus.NOT_STARTED
        )
        team.pipeline_error = ""
        team.save(update_fields=["pipeline_status", "pipeline_error"])
        notify.publish(
            team_id=team.pk, run_id=run.pk, status=team.pipeline_status, event="cancelled"
        )
        return run


def restart_pipeline(team: Team) -> PipelineRun:
    """Start the team's latest run over from its first stage, as a new run of the same kind on
    the same repositories. A running run is superseded (its live job ended) in the same
    transaction; a failed one is superseded too. Raises PipelineNotRetryable when the team
    never started a pipeline."""
    with transaction.atomic():
        team = _lock_team(team.pk)
        latest = (
            PipelineRun.objects.filter(team=team)
            .exclude(state=PipelineRun.State.SKIPPED)
            .order_by("-started_at", "-pk")
            .first()
        )
        if latest is None:
            raise PipelineNotRetryable("The team has never started a pipeline.")
        now = timezone.now()
        if latest.state == PipelineRun.State.RUNNING:
            _end_running_run(team, latest, PipelineRun.State.SUPERSEDED, RESTARTED_MESSAGE, now)
        return _new_run(team, latest.kind, list(latest.repository_ids), now)
