"""Procrastinate tasks: thin. Each loads by id, calls its stage and hands off through
``pipeline.transitions``. Job arguments are ids only."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import close_old_connections
from procrastinate import JobContext, RetryStrategy
from procrastinate.contrib.django import app
from procrastinate.jobs import Job
from procrastinate.retry import RetryDecision

from pipeline import execution, job_connections, nightly, queue, retention, transitions
from pipeline.errors import RescheduleStage, StageError
from pipeline.stages import email as email_stage
from pipeline.stages import stage_function
from pipeline.status import PipelineStatus

logger = logging.getLogger(__name__)


class StageRetryStrategy(RetryStrategy):
    """Exponential backoff, except for errors that retrying cannot fix (a revoked token, a
    repository the user cannot see): those fail at once, with no retry storm."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, StageError) and not exception.retryable:
            return None
        if job.attempts >= (self.max_attempts or 0):  # procrastinate reads 0 as "no limit"
            return None
        return super().get_retry_decision(exception=exception, job=job)


def _retry_strategy() -> StageRetryStrategy:
    return StageRetryStrategy(
        max_attempts=settings.PIPELINE_STAGE_MAX_RETRIES,
        exponential_wait=settings.PIPELINE_RETRY_BASE_SECONDS,
    )


def user_message(stage: str, exc: BaseException) -> str:
    """What the user reads: the stage's own message, or a generic one (details go to logs)."""
    if isinstance(exc, StageError):
        return exc.user_message
    label = PipelineStatus(stage).label.lower()
    return f"Something went wrong while {label}. You can retry; if it keeps failing, contact us."


def run_stage_job(context: JobContext, stage: str, run_id: int) -> None:
    """Begin, run and hand off one stage; shared by the four stage tasks."""
    # Worker threads are reused across jobs, and so are their connections (the worker sets
    # CONN_MAX_AGE): drop one the database has closed, with no round trip (job_connections).
    job_connections.before_job()
    job = context.job
    attempt = None
    try:
        attempt = transitions.begin_stage(run_id, stage, job_id=job.id, job_attempts=job.attempts)
        if attempt is None:
            return  # the run moved on (re-run after a crash, superseded): nothing to do
        with execution.executing(run_id, job.id):
            counts = stage_function(stage)(attempt.run)
        # The hand-off is inside the try: if its transaction fails, nothing of it committed
        # (no next job, status unchanged) and the attempt is retried or failed like any error.
        transitions.complete_stage(attempt, counts)
    except execution.Superseded as exc:
        logger.warning("stage %s of run %s stopped: %s", stage, run_id, exc)
    except RescheduleStage as exc:
        try:
            close_old_connections()
            transitions.reschedule_stage(attempt.pk, exc.at, exc.reason)
        except Exception as reschedule_exc:
            logger.exception("could not reschedule stage %s of run %s", stage, run_id)
            _record_failure(context, stage, run_id, attempt, reschedule_exc)
            raise
    except Exception as exc:
        if isinstance(exc, StageError):
            # Expected (a revoked token, GitHub down): one line, no traceback; procrastinate's
            # own outcome line for it is filtered likewise (pipeline.logs).
            logger.warning("stage %s of run %s failed: %s", stage, run_id, exc.user_message)
        else:
            logger.exception("stage %s of run %s failed", stage, run_id)
        # A failure that broke the connection (the database restarted) must not also lose
        # the record of it: reconnect before recording.
        close_old_connections()
        _record_failure(context, stage, run_id, attempt, exc)
        raise
    finally:
        close_old_connections()


def _record_failure(context: JobContext, stage: str, run_id: int, attempt, exc: Exception) -> None:
    """Record a failed attempt: retrying (procrastinate runs the job again) or final (the
    pipeline fails with a user-facing message). If recording itself fails (the database went
    away), the rescue loop repairs it: a job that stays ``doing`` after its execution ended in
    our history is superseded or ended (``rescue.repair_ended_executions``), and a run left
    with no job is failed with a message."""
    job = context.job
    message = user_message(stage, exc)
    final = context.app.tasks[job.task_name].get_retry_exception(exc, job) is None
    try:
        if attempt is None:
            return  # nothing began; a retry begins again, a final failure leaves no live job
        if final:
            transitions.fail_stage(attempt.pk, message)
        else:
            transitions.retry_stage_later(attempt.pk, message)
    except Exception:
        logger.exception("could not record the failure of stage %s of run %s", stage, run_id)


def _stage_task(stage: str):
    spec = queue.STAGE_JOBS[stage]
    return app.task(
        name=spec.task_name,
        queue=spec.queue,
        priority=spec.priority,
        pass_context=True,
        retry=_retry_strategy(),
    )


@_stage_task(PipelineStatus.SYNCING)
def sync_stage(context: JobContext, run_id: int) -> None:
    run_stage_job(context, PipelineStatus.SYNCING, run_id)


@_stage_task(PipelineStatus.LLM_PROCESSING)
def detect_stage(context: JobContext, run_id: int) -> None:
    run_stage_job(context, PipelineStatus.LLM_PROCESSING, run_id)


@_stage_task(PipelineStatus.COMPUTING_METRICS)
def metrics_stage(context: JobContext, run_id: int) -> None:
    run_stage_job(context, PipelineStatus.COMPUTING_METRICS, run_id)


@_stage_task(PipelineStatus.COMPUTING_INSIGHTS)
def insights_stage(context: JobContext, run_id: int) -> None:
    run_stage_job(context, PipelineStatus.COMPUTING_INSIGHTS, run_id)


@app.task(
    name=queue.EMAIL_JOB.task_name,
    queue=queue.EMAIL_JOB.queue,
    pass_context=True,
    retry=_retry_strategy(),
)
def send_email(context: JobContext, outbox_id: int) -> None:
    """The completion e-mail: an outbox job, not a stage. Its failure never fails the
    pipeline; the outbox row records the provider's error for staff."""
    job_connections.before_job()
    try:
        task = context.app.tasks[context.job.task_name]
        email_stage.send_outbox(
            outbox_id,
            final_attempt=task.get_retry_exception(Exception(), context.job) is None,
        )
    finally:
        close_old_connections()


@app.periodic(cron=settings.DETECT_RESCORE_CRON)
@app.task(name="pipeline.rescore_outdated_catalogue", queue=retention.QUEUE)
def rescore_outdated_catalogue(timestamp: int) -> None:
    """A team whose verdicts come from another catalogue version gets a rescore run."""
    from pipeline import rescore

    job_connections.before_job()
    try:
        rescore.rescore_outdated_teams()
    finally:
        close_old_connections()


@app.periodic(cron=settings.PIPELINE_RETENTION_CRON)
@app.task(name=retention.TASK_NAME, queue=retention.QUEUE)
def delete_finished_jobs(timestamp: int) -> None:
    """Retention: finished jobs older than PIPELINE_JOB_RETENTION_DAYS go (pipeline.retention)."""
    job_connections.before_job()
    try:
        deleted = retention.delete_finished_jobs()
        logger.info("retention: deleted %s finished jobs", deleted)
    finally:
        close_old_connections()


# The nightly batch (pipeline.nightly): a tick at NIGHTLY_CRON begins it, one fan-out job at a
# time starts the teams' nightly runs under the in-flight cap.
@app.periodic(cron=settings.NIGHTLY_CRON)
@app.task(name=nightly.TICK_TASK, queue=nightly.QUEUE)
def nightly_tick(timestamp: int) -> None:
    job_connections.before_job()
    try:
        nightly.start_batch(timestamp)
    finally:
        close_old_connections()


@app.task(name=nightly.FAN_OUT_TASK, queue=nightly.QUEUE)
def nightly_fan_out(batch_started: float) -> None:
    job_connections.before_job()
    try:
        nightly.run_fan_out(batch_started)
    finally:
        close_old_connections()
