"""The only code that changes a team's pipeline status.

Every function here is one transaction that (1) locks the team row and checks that the pipeline
is still where the caller thinks it is (compare-and-swap: if another run or a re-run already
moved it, nothing happens), (2) writes the new status and a history row, and (3) defers the next
job on Django's connection and sends ``pg_notify``. All of it commits, or none of it does, so the
status and the queue never drift (see ``pipeline.invariant`` for the query that checks it).

Lock order is always team row first, then the run: two transitions on one team never deadlock.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from onboarding.models import Repository, Team
from pipeline import notify, queue, signals
from pipeline.errors import InvalidSelection, PipelineNotRetryable, PipelineNotRunning
from pipeline.models import EmailOutbox, PipelineRun, RunKind, StageAttempt
from pipeline.stages import email as email_stage
from pipeline.status import STAGE_ORDER, PipelineStatus, next_status

logger = logging.getLogger(__name__)

WORKER_LOST_MESSAGE = "The worker running this step stopped before finishing; it was restarted."


def job_priority(run: PipelineRun) -> int | None:
    """Scheduled runs' jobs yield to onboarding's (procrastinate takes higher first); None keeps
    the job spec's own priority."""
    return None if run.kind == RunKind.ONBOARDING else settings.NIGHTLY_JOB_PRIORITY


def _lock_team(team_id: int) -> Team:
    return Team.objects.select_for_update().get(pk=team_id)


def _lock_team_of(**lookup) -> Team:
    """Lock the team row found through a run or attempt (one statement: the hand-off's cost is
    counted, see tests/pipeline/test_handoff_budget.py). Only the team row is locked; rows of
    the join are read again after the lock by the caller."""
    return Team.objects.select_for_update(of=("self",)).get(**lookup)


def _parse_ids(repository_ids: Iterable) -> list[int]:
    ids = []
    for raw in repository_ids:
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            raise InvalidSelection(f"{raw!r} is not a repository id.") from None
    return sorted(set(ids))


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


def _is_current(team: Team, run: PipelineRun, stage: str) -> bool:
    return (
        run.state == PipelineRun.State.RUNNING
        and run.stage == stage
        and team.pipeline_status == stage
    )


def begin_stage(
    run_id: int, stage: str, *, job_id: int | None, job_attempts: int | None = None
) -> StageAttempt | None:
    """Record that a job starts ``stage`` of run ``run_id``; None when the run is no longer in
    that stage (a re-run after a crash, a superseded run) or when the job is not the one that
    carries the stage now (a stale duplicate): the caller must then do nothing.

    ``job_id``/``job_attempts`` identify the procrastinate job and its execution; None only
    for calls outside a worker (tests, shell)."""
    with transaction.atomic():
        team = _lock_team_of(runs__id=run_id)
        run = PipelineRun.objects.get(pk=run_id)
        if not _is_current(team, run, stage):
            logger.info(
                "stage %s of run %s is not current (%s); skipping",
                stage,
                run_id,
                team.pipeline_status,
            )
            return None
        if job_id is not None and run.current_job_id not in (None, job_id):
            logger.warning(
                "job %s is not run %s's current job %s; skipping",
                job_id,
                run_id,
                run.current_job_id,
            )
            return None
        now = timezone.now()
        earlier = list(run.attempts.filter(stage=stage))
        # An attempt still marked running belongs to a worker that died (SIGKILL, OOM, host
        # loss) before recording its end; this job is its rescue.
        for lost in earlier:
            if lost.outcome == StageAttempt.Outcome.RUNNING:
                _finish_attempt(lost, StageAttempt.Outcome.FAILED, now, error=WORKER_LOST_MESSAGE)
        attempt = StageAttempt.objects.create(
            run=run,
            stage=stage,
            attempt=len(earlier) + 1,
            job_id=job_id,
            job_attempts=job_attempts,
            started_at=now,
        )
        notify.publish(
            team_id=team.pk,
            run_id=run.pk,
            status=stage,
            event="stage_started",
            attempt=attempt.pk,
        )
        return attempt


def _finish_attempt(
    attempt: StageAttempt,
    outcome: str,
    now: datetime.datetime,
    *,
    error: str = "",
    counts: dict | None = None,
) -> None:
    attempt.outcome = outcome
    attempt.finished_at = now
    attempt.duration_ms = max(0, int((now - attempt.started_at).total_seconds() * 1000))
    attempt.error = error
    if counts is not None:
        attempt.counts = counts
    attempt.save(update_fields=["outcome", "finished_at", "duration_ms", "error", "counts"])


def _lock_attempt(attempt_id: int) -> tuple[Team, PipelineRun, StageAttempt] | None:
    """Lock the team of an attempt and return fresh rows, or None if the attempt is no longer
    the running attempt of the current stage (compare-and-swap failed)."""
    team = _lock_team_of(runs__attempts__id=attempt_id)
    # Read after the lock: every change to these rows is made under it.
    attempt = StageAttempt.objects.select_related("run").get(pk=attempt_id)
    run = attempt.run
    superseded = attempt.job_id is not None and run.current_job_id not in (None, attempt.job_id)
    if (
        attempt.outcome != StageAttempt.Outcome.RUNNING
        or superseded
        or not _is_current(team, run, attempt.stage)
    ):
        logger.info("attempt %s is no longer current; hand-off skipped", attempt_id)
        return None
    return team, run, attempt


def complete_stage(attempt_id: int, counts: dict | None = None) -> str | None:
    """Hand off: the attempt succeeded, the next stage is queued, the status moves on. Returns
    the new status, or None when the run had already moved (nothing changed)."""
    with transaction.atomic():
        locked = _lock_attempt(attempt_id)
        if locked is None:
            return None
        team, run, attempt = locked
        now = timezone.now()
        new_status = next_status(attempt.stage)
        # The job goes in first: if anything after it fails, the whole hand-off rolls back with
        # it (tests/pipeline/test_worker.py injects exactly that fault).
        # Only onboarding tells the user by e-mail; nightly and re-score runs finish quietly.
        if new_status == PipelineStatus.COMPLETE and run.kind == RunKind.ONBOARDING:
            outbox = EmailOutbox.objects.create(
                run=run, team=team, recipients=email_stage.admin_recipients(team.pk)
            )
            outbox.job_id = queue.defer(queue.EMAIL_JOB, outbox_id=outbox.pk)
            outbox.save(update_fields=["job_id"])
        if new_status == PipelineStatus.COMPLETE:
            run.state = PipelineRun.State.COMPLETE
            run.finished_at = now
            run.current_job_id = None
        else:
            run.current_job_id = queue.defer_stage(
                new_status, run_id=run.pk, priority=job_priority(run)
            )
        _finish_attempt(attempt, StageAttempt.Outcome.SUCCEEDED, now, counts=counts or {})
        run.stage = new_status
        run.save(update_fields=["stage", "state", "finished_at", "current_job_id"])
        team.pipeline_status = new_status
        if new_status == PipelineStatus.COMPLETE:
            team.pipeline_completed_at = now
        team.save(update_fields=["pipeline_status", "pipeline_completed_at"])
        notify.publish(
            team_id=team.pk,
            run_id=run.pk,
            status=new_status,
            event="stage_completed",
            attempt=attempt.pk,
        )
        if attempt.stage == PipelineStatus.SYNCING:
            transaction.on_commit(
                lambda: signals.onboarding_sync_completed.send(
                    sender=PipelineRun,
                    team_id=team.pk,
                    run_id=run.pk,
                    repositories_synced=(counts or {}).get("repositories_synced", 0),
                    prs_synced=(counts or {}).get("prs_synced", 0),
                )
            )
        if new_status == PipelineStatus.COMPLETE:
            transaction.on_commit(
                lambda: signals.pipeline_completed.send(
                    sender=PipelineRun, team_id=team.pk, run_id=run.pk
                )
            )
        return new_status


def retry_stage_later(attempt_id: int, user_message: str) -> None:
    """The attempt failed with a transient error; procrastinate will run the job again."""
    with transaction.atomic():
        locked = _lock_attempt(attempt_id)
        if locked is None:
            return
        team, run, attempt = locked
        _finish_attempt(attempt, StageAttempt.Outcome.RETRYING, timezone.now(), error=user_message)
        notify.publish(
            team_id=team.pk,
            run_id=run.pk,
            status=team.pipeline_status,
            event="stage_retrying",
            attempt=attempt.pk,
        )


def reschedule_stage(attempt_id: int, at: datetime.datetime, reason: str) -> None:
    """Continue the stage at ``at`` in a new job (e.g. after a rate-limit reset) instead of
    keeping a worker asleep. The current job then ends; the new one is the stage's live job."""
    with transaction.atomic():
        locked = _lock_attempt(attempt_id)
        if locked is None:
            return
        team, run, attempt = locked
        run.current_job_id = queue.defer_stage(
            attempt.stage, run_id=run.pk, schedule_at=at, priority=job_priority(run)
        )
        run.save(update_fields=["current_job_id"])
        _finish_attempt(attempt, StageAttempt.Outcome.RESCHEDULED, timezone.now(), error=reason)
        notify.publish(
            team_id=team.pk,
            run_id=run.pk,
            status=team.pipeline_status,
            event="stage_rescheduled",
            attempt=attempt.pk,
        )


def fail_stage(attempt_id: int, user_message: str) -> bool:
    """Final failure of a stage: the run and the team are ``failed`` with a user-facing
    message. Returns False when the run had already moved on (nothing changed)."""
    with transaction.atomic():
        locked = _lock_attempt(attempt_id)
        if locked is None:
            return False
        team, run, attempt = locked
        now = timezone.now()
        _finish_attempt(attempt, StageAttempt.Outcome.FAILED, now, error=user_message)
        run.state = PipelineRun.State.FAILED
        run.error = user_message
        run.finished_at = now
        run.save(update_fields=["state", "error", "finished_at"])
        team.pipeline_status = PipelineStatus.FAILED
        team.pipeline_error = user_message
        team.save(update_fields=["pipeline_status", "pipeline_error"])
        notify.publish(
            team_id=team.pk,
            run_id=run.pk,
            status=PipelineStatus.FAILED,
            event="failed",
            attempt=attempt.pk,
        )
        stage = attempt.stage
        transaction.on_commit(
            lambda: signals.pipeline_failed.send(
                sender=PipelineRun,
                team_id=team.pk,
                run_id=run.pk,
                stage=stage,
                error=user_message,
            )
        )
        return True


def supersede_stage_job(
    run_id: int,
    job_id: int,
    stage: str,
    *,
    still_stalled: Callable[[], bool],
    worker_lost: bool,
    give_up_message: str,
    end_status: str = "failed",
) -> str:
    """End a stage job whose execution cannot finish by itself (its worker is dead, or it
    ended in our history while procrastinate never recorded it) and, if it was carrying the
    run's stage, defer a new job as the run's current one, in one transaction.

    Superseding rather than re-queueing the same job id is what makes a late finish harmless:
    procrastinate's finish of a job does not check which worker owns it, so a same-id re-queue
    of a job whose first worker still runs (hung, partitioned, shutting down) would let that
    worker mark the shared job succeeded under the second one. Here the old job is failed at
    once, the old attempt is closed, and every later begin/complete/fail/retry of it is a no-op
    (``_lock_attempt`` and ``begin_stage`` only accept the run's current job).

    ``still_stalled`` re-checks the job under its row lock (after the team lock: the usual
    order); the old job ends as ``end_status``. ``worker_lost`` closes the running attempt as
    lost; after more than PIPELINE_STAGE_MAX_RETRIES lost attempts of the stage (a stage that
    kills its worker every time, e.g. by running out of memory) the run fails with
    ``give_up_message`` instead.
    Returns "alive" (nothing done), "ended" (the job was not carrying the stage: ended only),
    "superseded" or "given_up"."""
    with transaction.atomic():
        team_id = PipelineRun.objects.values_list("team_id", flat=True).get(pk=run_id)
        team = _lock_team(team_id)
        if not still_stalled():
            return "alive"
        queue.finish_job(job_id, end_status)
        run = PipelineRun.objects.get(pk=run_id)
        if not _is_current(team, run, stage) or run.current_job_id not in (None, job_id):
            return "ended"
        now = timezone.now()
        if worker_lost:
            for lost in run.attempts.filter(stage=stage, outcome=StageAttempt.Outcome.RUNNING):
                _finish_attempt(lost, StageAttempt.Outcome.FAILED, now, error=WORKER_LOST_MESSAGE)
            lost_count = run.attempts.filter(stage=stage, error=WORKER_LOST_MESSAGE).count()
            if lost_count > settings.PIPELINE_STAGE_MAX_RETRIES:
                _fail_run(team, run, give_up_message, now)
                return "given_up"
        # Ahead of fresh work: the stage was already running when its worker died, so it must
        # not wait behind a backlog of newer jobs (kill -> running again in seconds).
        run.current_job_id = queue.defer_stage(
            stage, run_id=run.pk, priority=settings.PIPELINE_RESCUED_JOB_PRIORITY
        )
        run.save(update_fields=["current_job_id"])
        notify.publish(team_id=team.pk, run_id=run.pk, status=stage, event="stage_rescued")
        return "superseded"


def _fail_run(team: Team, run: PipelineRun, user_message: str, now: datetime.datetime) -> None:
    for attempt in run.attempts.filter(outcome=StageAttempt.Outcome.RUNNING):
        _finish_attempt(attempt, StageAttempt.Outcome.FAILED, now, error=user_message)
    run.state = PipelineRun.State.FAILED
    run.error = user_message
    run.finished_at = now
    run.current_job_id = None
    run.save(update_fields=["state", "error", "finished_at", "current_job_id"])
    team.pipeline_status = PipelineStatus.FAILED
    team.pipeline_error = user_message
    team.save(update_fields=["pipeline_status", "pipeline_error"])
    notify.publish(team_id=team.pk, run_id=run.pk, status=PipelineStatus.FAILED, event="failed")
    stage = run.stage
    transaction.on_commit(
        lambda: signals.pipeline_failed.send(
            sender=PipelineRun, team_id=team.pk, run_id=run.pk, stage=stage, error=user_message
        )
    )


def fail_stranded_run(run_id: int, user_message: str) -> bool:
    """Fail a running run whose current stage has no live job left (its job was cancelled,
    failed without our code recording it, or was given up after killing workers again and
    again). Without this the status would claim work that is not queued, forever. Returns
    False, changing nothing, when the run has a live job or is no longer running."""
    with transaction.atomic():
        team_id = PipelineRun.objects.values_list("team_id", flat=True).get(pk=run_id)
        team = _lock_team(team_id)
        run = PipelineRun.objects.get(pk=run_id)
        # Checked under the team lock: a hand-off (which holds it too) cannot be half-way.
        if not _is_current(team, run, run.stage) or queue.live_stage_jobs(run.pk, run.stage):
            return False
        _fail_run(team, run, user_message, timezone.now())
        return True


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
