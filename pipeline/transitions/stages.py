"""One stage's execution: a job begins its stage, hands off to the next (or completes the run),
retries later, reschedules itself, or fails the run; and rescue's two moves, superseding a job
that cannot finish and failing a run left with no live job. Each accepts only the run's current
attempt and job (``_common._lock_attempt``), so a stale or duplicate job changes nothing. See
the package docstring for the invariant."""

from __future__ import annotations

import datetime
import functools
import json
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from onboarding.models import Team
from pipeline import notify, queue, signals
from pipeline.models import PipelineRun, RunKind, StageAttempt, from_row
from pipeline.status import STAGE_ORDER, PipelineStatus, next_status
from pipeline.transitions._common import (
    WORKER_LOST_MESSAGE,
    _finish_attempt,
    _is_current,
    _lock_attempt,
    _lock_team,
    job_priority,
    kind_priority,
)

logger = logging.getLogger(__name__)


def begin_stage(
    run_id: int, stage: str, *, job_id: int | None, job_attempts: int | None = None
) -> StageAttempt | None:
    """Record that a job starts ``stage`` of run ``run_id``; None when the run is no longer in
    that stage (a re-run after a crash, a superseded run) or when the job is not the one that
    carries the stage now (a stale duplicate): the caller must then do nothing.

    One statement, one transaction (``pipeline_begin_stage_v1``, migration 0008): lock the team,
    read the run after the lock, compare-and-swap on state, stage and current job, close an
    attempt a dead worker left running, insert the attempt and NOTIFY ``stage_started``. The
    returned attempt carries its run, read under that lock.

    Its commit does not wait for the WAL flush (``synchronous_commit`` off for this transaction
    only). A transaction that NOTIFYs holds PostgreSQL's one notification lock from before its
    commit record is written until the commit ends, flush included, so notifying commits
    queue behind each other's fsyncs; with a flush-free begin, a stage job has one such
    commit (its hand-off), as a plain procrastinate job has one (its defer). In paired
    bench/engine runs at concurrency 8 the product's rate rose 10-15% (205 to 225 and 178 to
    205 stage jobs/s). Safe:
    only a database crash can lose a commit that way, and then only the last ones in WAL order
    (any later flush, such as procrastinate's own write of the job's outcome, covers it). A lost
    begin leaves the job ``doing`` with no attempt, the state of a worker that died just after
    fetching it, and the rescue loop supersedes such a job as it does any job of a dead worker.
    The hand-off, which defers the next job, is flushed as usual.

    ``job_id``/``job_attempts`` identify the procrastinate job and its execution; None only
    for calls outside a worker (tests, shell)."""
    result = _call(
        "pipeline_begin_stage_v1",
        run_id,
        stage,
        job_id,
        job_attempts,
        WORKER_LOST_MESSAGE,
        notify.CHANNEL,
        wait_for_flush=False,
    )
    if result["result"] == "missing":
        raise PipelineRun.DoesNotExist(f"run {run_id} does not exist")
    if result["result"] == "not_current":
        logger.info(
            "stage %s of run %s is not current (%s); skipping",
            stage,
            run_id,
            result["team_status"],
        )
        return None
    if result["result"] == "not_current_job":
        logger.warning(
            "job %s is not run %s's current job %s; skipping",
            job_id,
            run_id,
            result["current_job_id"],
        )
        return None
    attempt = from_row(StageAttempt, result["attempt"])
    attempt.run = from_row(PipelineRun, result["run"])
    return attempt


def complete_stage(attempt: StageAttempt | int, counts: dict | None = None) -> str | None:
    """Hand off: the attempt succeeded, the next stage is queued (or, after the last stage, the
    run is complete and an onboarding run's e-mail is in the outbox with its job), the status
    moves on and ``stage_completed`` is NOTIFYed. Returns the new status, or None when the run
    had already moved (nothing changed).

    One statement, one transaction (``pipeline_complete_stage_v1``): the same lock, re-read and
    compare-and-swap as every transition, then the job first (a failure after it rolls it back
    too), the attempt, run and team rows, and the NOTIFY. ``attempt`` is the StageAttempt that
    ``begin_stage`` returned (with its run: no read needed), or an attempt id. The outbox row's
    recipients are filled in when the e-mail job sends (the team's admins then:
    ``pipeline.stages.email.send_outbox``)."""
    if not isinstance(attempt, StageAttempt):
        attempt = StageAttempt.objects.select_related("run").get(pk=attempt)
    run = attempt.run
    result = _call(
        "pipeline_complete_stage_v1",
        attempt.pk,
        Jsonb(counts or {}),
        _handoff_plan(settings.NIGHTLY_JOB_PRIORITY),
        _EMAIL_JOB,
        notify.CHANNEL,
    )
    if result["result"] != "handed_off":
        logger.info("attempt %s is no longer current; hand-off skipped", attempt.pk)
        return None
    new_status, team_id, run_id = result["status"], result["team_id"], result["run_id"]
    if attempt.stage == PipelineStatus.SYNCING:
        transaction.on_commit(
            lambda: signals.onboarding_sync_completed.send(
                sender=PipelineRun,
                team_id=team_id,
                run_id=run_id,
                repositories_synced=(counts or {}).get("repositories_synced", 0),
                prs_synced=(counts or {}).get("prs_synced", 0),
            )
        )
    if new_status == PipelineStatus.COMPLETE:
        transaction.on_commit(
            lambda: signals.pipeline_completed.send(
                sender=PipelineRun, team_id=team_id, run_id=run_id, kind=run.kind
            )
        )
    return new_status


# The e-mail job an onboarding run's last hand-off defers, for pipeline_complete_stage_v1.
_EMAIL_JOB = json.dumps(
    {
        "task": queue.EMAIL_JOB.task_name,
        "queue": queue.EMAIL_JOB.queue,
        "priority": queue.EMAIL_JOB.priority,
    }
)


@functools.lru_cache(maxsize=4)
def _handoff_plan(scheduled_priority: int) -> str:
    """What follows each stage, for ``pipeline_complete_stage_v1`` (JSON, built once per value
    of the scheduled runs' priority setting): the next status and, unless the run completes,
    the next stage's job (task, queue, priority by run kind)."""
    plan = {}
    for stage in STAGE_ORDER:
        following = next_status(stage)
        step: dict = {"status": following}
        if following != PipelineStatus.COMPLETE:
            spec = queue.STAGE_JOBS[following]
            step.update(
                task=spec.task_name,
                queue=spec.queue,
                priority={kind: _priority(kind, spec) for kind in RunKind.values},
            )
        plan[stage] = step
    return json.dumps(plan)


def _priority(kind: str, spec: queue.JobSpec) -> int:
    chosen = kind_priority(kind)
    return spec.priority if chosen is None else chosen


def _call(function: str, *args, wait_for_flush: bool = True) -> dict:
    """``SELECT function(args)`` on Django's connection (in the caller's transaction if there is
    one, else a transaction of its own), returning its jsonb result.

    ``wait_for_flush=False`` commits that transaction without waiting for its WAL flush
    (``synchronous_commit`` off for it alone). See ``begin_stage`` for why that is safe there."""
    placeholders = ", ".join(["%s"] * len(args))
    asynchronous = "" if wait_for_flush else "set_config('synchronous_commit', 'off', true), "
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {asynchronous}{function}({placeholders})", list(args))
        result = cursor.fetchone()[-1]
    return json.loads(result) if isinstance(result, str) else result


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
    end_status: str = "aborted",
) -> str:
    """End a stage job whose execution cannot finish by itself (its worker is dead, or it
    ended in our history while procrastinate never recorded it) and, if it was carrying the
    run's stage, defer a new job as the run's current one, in one transaction.

    Superseding rather than re-queueing the same job id is what makes a late finish harmless:
    procrastinate's finish of a job does not check which worker owns it, so a same-id re-queue
    of a job whose first worker still runs (hung, partitioned, shutting down) would let that
    worker mark the shared job succeeded under the second one. Here the old job is ended at
    once as ``aborted`` (not ``failed``: procrastinate's retry, ``procrastinate_retry_job_v2``,
    revives ``failed`` jobs, so a late retryable failure of the old execution would bring it back
    as live work beside the new one; ``aborted`` it cannot revive), the old attempt is closed,
    and every later begin/complete/fail/retry of it is a no-op (``_lock_attempt`` and
    ``begin_stage`` only accept the run's current job).

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
