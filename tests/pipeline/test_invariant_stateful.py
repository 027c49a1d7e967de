"""Random sequences of pipeline events never let status and queue drift.

A Hypothesis state machine plays several teams and several workers against the real
PostgreSQL database: it starts pipelines of every kind, lets workers take jobs with
procrastinate's own SQL (``procrastinate_fetch_job_v2``), hands stages off, fails them
(transient and final), reschedules them, retries, cancels and restarts pipelines, kills and
hangs workers and rescues their jobs, all through the real ``pipeline.transitions`` and
``pipeline.rescue`` functions. After every step it runs ``pipeline.invariant.find_drift`` (the
query ``manage.py pipeline check`` runs) and compares the database with its own model: each
team's status, one live job carrying the current stage, no live stage job for a finished
pipeline, no stage that succeeded twice, one e-mail per completed onboarding.

Why in-process workers and not worker processes: the order of events is then chosen by
Hypothesis, so a failing sequence is shrunk and replayed exactly. A worker here is what
``pipeline.liveness`` sees of a ``manage.py worker``: a ``procrastinate_workers`` row whose
heartbeat is refreshed before every step, and a dedicated connection holding the worker's
advisory lock, recorded in ``pipeline_workerliveness``. Workers die the way that rule defines
death, never by waiting for a clock:

- SIGKILL: the lock connection closes. The rescuer that first sees the lock missing notes it;
  the worker counts as dead once the grace has passed, which the machine simulates by moving
  that note back in time (rule ``time_passes``).
- pruned: the worker's row is gone (another worker pruned it).
- hung: the heartbeat is old while the process (and its lock) live on. Such a worker may come
  back and finish its job late, after the rescuer superseded it: that must change nothing.

The retry budget, stalled threshold and liveness grace are the shipped settings; examples are
derandomized so CI replays the same sequences on every run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter

import psycopg
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import mail
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, event
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from procrastinate import JobContext, sql
from procrastinate.contrib.django import app
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Job
from procrastinate.jobs import Status as JobStatus

from onboarding.models import Membership, Repository, Team
from pipeline import liveness, queue, rescue, tasks, transitions
from pipeline.errors import PipelineNotRetryable, PipelineNotRunning, StageError
from pipeline.invariant import find_drift
from pipeline.models import EmailOutbox, PipelineRun, RunKind, StageAttempt
from pipeline.stages import email as email_stage
from pipeline.status import STAGE_ORDER, TERMINAL_STATUSES, PipelineStatus, next_status
from tests.conftest import test_database_url as database_url

TEAMS = 3
MAX_LIVE_WORKERS = 3
QUEUE_CHOICES = [None, *sorted({spec.queue for spec in queue.STAGE_JOBS.values()})]
STAGE_TASK_NAMES = list(queue.STAGE_BY_TASK_NAME)

SUCCEEDS = "succeeds"
FAILS_RETRYABLE = "fails, retryable"
FAILS_FOR_GOOD = "fails for good"
RESCHEDULES = "reschedules"
KILLED = "its worker is SIGKILLed"
PRUNED = "its worker is SIGKILLed and its row pruned"
HANGS = "its worker hangs (no heartbeat)"
HANDED_OFF_THEN_PRUNED = "it hands off, then its worker dies and is pruned before the finish"
HANDED_OFF_THEN_HANGS = "it hands off, then its worker hangs before the finish"
# Workers running jobs to their end: mostly successes, so that sequences of a few dozen steps
# reach the later stages; more deaths come from jobs held across steps (``running_job_ends``,
# ``worker_dies``).
RUN_OUTCOMES = [*[SUCCEEDS] * 8, FAILS_RETRYABLE, FAILS_FOR_GOOD, RESCHEDULES, KILLED, HANGS]
# What the other workers' rescue loops do meanwhile.
THEN_NOTHING, THEN_RESCUE, THEN_TIME_PASSES = "nothing", "a rescue pass", "time passes, a pass"
OUTCOMES = [
    *[SUCCEEDS] * 4,
    FAILS_RETRYABLE,
    FAILS_FOR_GOOD,
    RESCHEDULES,
    KILLED,
    PRUNED,
    HANGS,
    HANDED_OFF_THEN_PRUNED,
    HANDED_OFF_THEN_HANGS,
]
STAFF_ACTIONS = [
    "start onboarding",
    "retry",
    "start nightly",
    "start re-score",
    "cancel",
    "restart",
]
# Every way a superseded execution can come back. A late retryable failure is the sharp one:
# procrastinate's retry (procrastinate_retry_job_v2) revives "failed" jobs, which is why a
# superseded job ends "aborted" (this machine found that, as drift once the run moved on).
LATE_OUTCOMES = [SUCCEEDS, FAILS_RETRYABLE, FAILS_FOR_GOOD, RESCHEDULES]


def _sql(query: str, params: dict | list | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else []


def _connector():
    return queue.job_manager().connector.get_sync_connector()


def _reset_tables() -> None:
    # Every example starts from empty tables; restarting the sequences keeps ids (and so a
    # failing sequence's report) the same from run to run.
    _sql(
        "TRUNCATE onboarding_team, auth_user, procrastinate_jobs, procrastinate_workers,"
        " pipeline_workerliveness RESTART IDENTITY CASCADE"
    )


@dataclasses.dataclass
class Execution:
    """A job a worker has taken and is running (between fetch and procrastinate's finish)."""

    job: Job
    worker_id: int
    stage: str
    run_id: int
    team_id: int
    attempt_id: int


@dataclasses.dataclass
class TeamModel:
    status: str = PipelineStatus.NOT_STARTED
    run_id: int | None = None
    kind: str | None = None  # of the latest run that started
    onboarded: bool = False


class PipelineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        _reset_tables()
        mail.outbox = []
        self.teams: list[Team] = []
        self.repository_ids: dict[int, int] = {}
        for i in range(TEAMS):
            team = Team.objects.create(name=f"Team {i}")
            user = get_user_model().objects.create_user(
                username=f"admin{i}", email=f"admin{i}@example.com", password="x"
            )
            Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
            self.repository_ids[team.pk] = Repository.objects.create(
                team=team, github_id=1000 + i, full_name=f"team{i}/repo"
            ).pk
            self.teams.append(team)
        self.model: dict[int, TeamModel] = {team.pk: TeamModel() for team in self.teams}
        # worker id -> the connection holding its liveness lock
        self.lock_connections: dict[int, psycopg.Connection] = {}
        self.live_workers: list[int] = []
        # dead workers: how they died; SIGKILLed ones whose missing lock a rescuer noted, and
        # those whose grace has passed since
        self.deaths: dict[int, str] = {}
        self.lock_seen_missing: set[int] = set()
        self.grace_passed: set[int] = set()
        # job id -> execution, for jobs held by live workers, and by hung workers
        self.executions: dict[int, Execution] = {}
        self.hung: dict[int, Execution] = {}
        # hung executions whose job the rescuer superseded: they may still finish, late
        self.superseded: dict[int, Execution] = {}
        # job id -> worker id, for stage jobs left in doing by a SIGKILLed worker (the
        # e-mail job is sent within the step that takes it)
        self.orphans: dict[int, int] = {}
        # attempts that still carry their run's current stage
        self.current_attempts: set[int] = set()
        # attempts lost to dead workers, per (run id, stage)
        self.lost: Counter[tuple[int, str]] = Counter()
        self.successes: Counter[tuple[int, str]] = Counter()
        self.completed_onboardings: set[int] = set()
        self.live_workers.append(self._start_worker())

    def teardown(self) -> None:
        for conn in self.lock_connections.values():
            conn.close()

    # --- workers, as ``manage.py worker`` does it ---------------------------------------

    def _start_worker(self) -> int:
        [(worker_id,)] = _sql("SELECT worker_id FROM procrastinate_register_worker_v1()")
        conn = psycopg.connect(
            database_url(),
            autocommit=True,
            application_name=f"{liveness.APPLICATION_NAME_PREFIX}{worker_id}",
        )
        [(locked,)] = conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s::int)", [liveness.LOCK_NAMESPACE, worker_id]
        ).fetchall()
        assert locked
        conn.execute(
            "INSERT INTO pipeline_workerliveness (worker_id, lock_acquired_at) VALUES (%s, now())",
            [worker_id],
        )
        self.lock_connections[worker_id] = conn
        return worker_id

    def _heartbeat(self) -> None:
        """Live workers heartbeat. The machine's clock only moves in ``time_passes``: a
        SIGKILLed worker's last heartbeat stays within the stalled threshold (the heartbeat
        rule is played by hung workers), and a lock a rescuer saw missing stays within its
        grace (its note is dated ahead, so a slow step never lets real time decide)."""
        killed = [w for w, how in self.deaths.items() if how == KILLED]
        for worker_id in [*self.live_workers, *killed]:
            _connector().execute_query(query=sql.queries["update_heartbeat"], worker_id=worker_id)
        _sql(
            "UPDATE pipeline_workerliveness SET lock_missing_since = now() + interval '1 hour'"
            " WHERE lock_missing_since IS NOT NULL AND NOT worker_id = ANY(%s)",
            [sorted(self.grace_passed)],
        )
        # Likewise an execution that ended in our history while a worker still holds its job
        # (a cancelled run's) stays within the repair's grace.
        held = [*self.executions, *self.hung, *self.orphans]
        _sql(
            "UPDATE pipeline_stageattempt SET finished_at = now()"
            " WHERE job_id = ANY(%s) AND finished_at IS NOT NULL",
            [held],
        )

    def _fetch(self, worker_id: int, queue_name: str | None) -> Job | None:
        row = _connector().execute_query_one(
            query=sql.queries["fetch_job"],
            queues=None if queue_name is None else [queue_name],
            worker_id=worker_id,
        )
        if row["id"] is None:
            return None
        # Django's psycopg setup hands jsonb over as text; procrastinate's own connectors
        # decode it.
        if isinstance(row["args"], str):
            row = {**row, "args": json.loads(row["args"])}
        return Job.from_row(row)

    def _finish(self, job: Job, status: JobStatus) -> None:
        _connector().execute_query(
            query=sql.queries["finish_job"], job_id=job.id, status=status.value, delete_job=False
        )

    def _retry(self, job: Job, retry_at) -> None:
        queue.job_manager().retry_job_by_id(job_id=job.id, retry_at=retry_at or timezone.now())

    def _context(self, job: Job, worker_id: int) -> JobContext:
        return JobContext(
            app=app,
            job=job,
            worker_name=f"worker-{worker_id}",
            start_timestamp=time.time(),
            abort_reason=lambda: None,
        )

    def _job(self, job_id: int) -> dict:
        [(status, attempts, worker_id)] = _sql(
            "SELECT status::text, attempts, worker_id FROM procrastinate_jobs WHERE id = %s",
            [job_id],
        )
        return {"status": status, "attempts": attempts, "worker_id": worker_id}

    def _team_of_run(self, run_id: int) -> int:
        return PipelineRun.objects.values_list("team_id", flat=True).get(pk=run_id)

    def _teams_in(self, statuses) -> bool:
        return any(expected.status in statuses for expected in self.model.values())

    def _current_job_id(self, run_id: int) -> int | None:
        return PipelineRun.objects.values_list("current_job_id", flat=True).get(pk=run_id)

    def _run_ended(self, team_id: int) -> None:
        """The team's running run ended (failed, cancelled, restarted): its executions no
        longer carry a stage."""
        run_id = self.model[team_id].run_id
        for held in (self.executions, self.hung):
            for execution in held.values():
                if execution.run_id == run_id:
                    self.current_attempts.discard(execution.attempt_id)

    # --- starting, retrying, cancelling -------------------------------------------------

    @rule(team=st.integers(0, TEAMS - 1), action=st.sampled_from(STAFF_ACTIONS))
    def user_or_staff_acts(self, team: int, action: str) -> None:
        """One rule for all of them, so that they do not crowd out the workers' steps. Each
        is tried in any state: where it must be refused, the refusal is checked."""
        if action == "start onboarding":
            self.start_pipeline(team)
        elif action.startswith("start "):
            self.start_scheduled_run(
                team, RunKind.NIGHTLY if action == "start nightly" else RunKind.RESCORE
            )
        elif action == "retry":
            self.retry_pipeline(team)
        elif action == "cancel":
            self.cancel_pipeline(team)
        else:
            self.restart_pipeline(team)

    @initialize(teams=st.sets(st.integers(0, TEAMS - 1), min_size=1))
    def start_some_pipelines(self, teams: set[int]) -> None:
        for team in sorted(teams):
            self.start_pipeline(team)

    def start_pipeline(self, team: int) -> None:
        team_row = self.teams[team]
        expected = self.model[team_row.pk]
        run = transitions.start_pipeline(team_row, [self.repository_ids[team_row.pk]])
        if expected.status in TERMINAL_STATUSES:
            assert run.pk != expected.run_id, "a finished pipeline starts a new run"
            expected.status, expected.run_id = PipelineStatus.SYNCING, run.pk
            expected.kind = RunKind.ONBOARDING
        else:
            assert run.pk == expected.run_id, "a start while running returns the running run"

    def start_scheduled_run(self, team: int, kind: str) -> None:
        """A nightly or re-score run: only after onboarding, never over a running run."""
        team_row = self.teams[team]
        expected = self.model[team_row.pk]
        if expected.status not in TERMINAL_STATUSES:
            run = transitions.start_run(team_row, kind)
            assert run.state == PipelineRun.State.SKIPPED
            return
        if not expected.onboarded:
            with pytest.raises(PipelineNotRetryable):
                transitions.start_run(team_row, kind)
            return
        run = transitions.start_run(team_row, kind)
        event(f"a {kind} run started")
        assert run.state == PipelineRun.State.RUNNING
        expected.status, expected.run_id = transitions.FIRST_STAGE[kind], run.pk
        expected.kind = kind

    def retry_pipeline(self, team: int) -> None:
        team_row = self.teams[team]
        expected = self.model[team_row.pk]
        if expected.status != PipelineStatus.FAILED:
            with pytest.raises(PipelineNotRetryable):
                transitions.retry_pipeline(team_row)
            return
        failed_stage = PipelineRun.objects.get(pk=expected.run_id).stage
        run = transitions.retry_pipeline(team_row)
        event("a failed pipeline was retried")
        assert run.pk == expected.run_id, "a retry resumes the failed run"
        assert failed_stage in STAGE_ORDER
        expected.status = failed_stage

    def cancel_pipeline(self, team: int) -> None:
        team_row = self.teams[team]
        expected = self.model[team_row.pk]
        if expected.status in TERMINAL_STATUSES:
            with pytest.raises(PipelineNotRunning):
                transitions.cancel_pipeline(team_row, reason="testing")
            return
        run = transitions.cancel_pipeline(team_row, reason="testing")
        event("a running pipeline was cancelled")
        assert run.pk == expected.run_id
        self._run_ended(team_row.pk)
        expected.status = (
            PipelineStatus.COMPLETE if expected.onboarded else PipelineStatus.NOT_STARTED
        )

    def restart_pipeline(self, team: int) -> None:
        team_row = self.teams[team]
        expected = self.model[team_row.pk]
        if expected.kind is None:
            with pytest.raises(PipelineNotRetryable):
                transitions.restart_pipeline(team_row)
            return
        if expected.status not in TERMINAL_STATUSES:
            self._run_ended(team_row.pk)
        run = transitions.restart_pipeline(team_row)
        event("a pipeline was restarted")
        assert run.pk != expected.run_id and run.kind == expected.kind
        expected.status, expected.run_id = transitions.FIRST_STAGE[expected.kind], run.pk

    # --- workers taking and running jobs ------------------------------------------------

    @precondition(lambda self: len(self.live_workers) < MAX_LIVE_WORKERS)
    @rule()
    def add_worker(self) -> None:
        self.live_workers.append(self._start_worker())

    def _take(self, worker_id: int, queue_name: str | None) -> Execution | None:
        """Fetch the next job of the queue and begin it as run_stage_job does. A job that is
        not the current one of its stage does nothing and ends; the e-mail is sent."""
        job = self._fetch(worker_id, queue_name)
        if job is None:
            return None
        if job.task_name == queue.EMAIL_JOB.task_name:
            self._send_email(job)
            return None
        stage = queue.STAGE_BY_TASK_NAME[job.task_name]
        run_id = job.task_kwargs["run_id"]
        team_id = self._team_of_run(run_id)
        expected = self.model[team_id]
        is_current = (
            expected.run_id == run_id
            and expected.status == stage
            and self._current_job_id(run_id) == job.id
        )
        attempt = transitions.begin_stage(run_id, stage, job_id=job.id, job_attempts=job.attempts)
        assert (attempt is not None) == is_current, (
            f"begin_stage of job {job.id} ({stage}, run {run_id}) returned {attempt}; "
            f"the model says current={is_current}"
        )
        if attempt is None:
            event("a job that is not current did nothing")
            self._finish(job, JobStatus.SUCCEEDED)  # the task returns: nothing to do
            return None
        self.current_attempts.add(attempt.pk)
        return Execution(job, worker_id, stage, run_id, team_id, attempt.pk)

    def _send_email(self, job: Job) -> None:
        task = app.tasks[job.task_name]
        outbox_id = job.task_kwargs["outbox_id"]
        try:
            email_stage.send_outbox(
                outbox_id, final_attempt=task.get_retry_exception(Exception(), job) is None
            )
        except email_stage.EmailNotSent as exc:
            raise AssertionError(f"the completion e-mail of outbox {outbox_id} failed") from exc
        event("a completion e-mail was sent")
        self._finish(job, JobStatus.SUCCEEDED)

    @rule(data=st.data(), queue_name=st.sampled_from(QUEUE_CHOICES))
    def take_job(self, data: st.DataObject, queue_name: str | None) -> None:
        """A live worker takes a job and keeps it running across the next steps."""
        worker_id = data.draw(st.sampled_from(self.live_workers), label="worker")
        execution = self._take(worker_id, queue_name)
        if execution is not None:
            self.executions[execution.job.id] = execution

    @rule(
        data=st.data(),
        outcomes=st.lists(st.sampled_from(RUN_OUTCOMES), min_size=1, max_size=6),
        then=st.sampled_from([THEN_NOTHING, THEN_RESCUE, THEN_TIME_PASSES]),
    )
    def run_jobs(self, data: st.DataObject, outcomes: list[str], then: str) -> None:
        """A live worker of every queue takes jobs one after the other and runs each to its
        end (or dies running it); then the rescue loop may pass."""
        worker_id = data.draw(st.sampled_from(self.live_workers), label="worker")
        for outcome in outcomes:
            if worker_id not in self.live_workers:
                break
            execution = self._take(worker_id, None)
            if execution is not None:
                self._end(execution, outcome)
            self.status_and_queue_agree()
        if then == THEN_TIME_PASSES and self.lock_seen_missing - self.grace_passed:
            self.time_passes()
        if then != THEN_NOTHING:
            self.rescue()

    @precondition(lambda self: self.executions)
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def running_job_ends(self, data: st.DataObject, outcome: str) -> None:
        """One of the jobs held by a live worker ends (or its worker dies)."""
        job_id = data.draw(st.sampled_from(sorted(self.executions)), label="execution")
        self._end(self.executions.pop(job_id), outcome)

    def _end(self, execution: Execution, outcome: str) -> None:
        if outcome in (KILLED, PRUNED, HANGS):
            self.executions[execution.job.id] = execution
            self._kill(execution.worker_id, how=outcome)
        elif outcome in (HANDED_OFF_THEN_PRUNED, HANDED_OFF_THEN_HANGS):
            # Our commit is in; procrastinate never records the job's end. (Not with a plain
            # SIGKILL: within the liveness grace, real time would decide whether the repair of
            # ended executions or the rescue ends the job.)
            self._succeed(execution, finish=False)
            self.executions[execution.job.id] = execution
            self._kill(
                execution.worker_id, how=PRUNED if outcome == HANDED_OFF_THEN_PRUNED else HANGS
            )
        elif outcome == SUCCEEDS:
            self._succeed(execution)
        elif outcome == RESCHEDULES:
            self._reschedule(execution)
        else:
            self._fail(execution, retryable=outcome == FAILS_RETRYABLE)

    def _succeed(self, execution: Execution, *, finish: bool = True) -> None:
        """The hand-off, then (a separate, later write) procrastinate's finish."""
        current = execution.attempt_id in self.current_attempts
        new_status = transitions.complete_stage(execution.attempt_id, {"items": 1})
        if not current:
            assert new_status is None, f"a stale hand-off of job {execution.job.id} moved on"
        else:
            assert new_status == next_status(execution.stage), (
                f"the hand-off of {execution.stage} (run {execution.run_id}) returned {new_status}"
            )
            self.current_attempts.discard(execution.attempt_id)
            self.successes[(execution.run_id, execution.stage)] += 1
            expected = self.model[execution.team_id]
            expected.status = next_status(execution.stage)
            if expected.status == PipelineStatus.COMPLETE:
                event(f"a {expected.kind} run completed")
                if expected.kind == RunKind.ONBOARDING:
                    expected.onboarded = True
                    self.completed_onboardings.add(execution.run_id)
        # The tolerated transient: our commit is in, the job still shows doing.
        assert find_drift() == []
        if finish:
            self._finish(execution.job, JobStatus.SUCCEEDED)

    def _fail(self, execution: Execution, *, retryable: bool) -> None:
        """A stage raises: the worker's failure path (tasks._record_failure), then
        procrastinate's retry (same job id, attempts + 1) or final failure."""
        job = execution.job
        current = execution.attempt_id in self.current_attempts
        exc = StageError("GitHub answered with an error.", retryable=retryable)
        retry = app.tasks[job.task_name].get_retry_exception(exc, job)
        budget_left = job.attempts < settings.PIPELINE_STAGE_MAX_RETRIES
        assert (retry is not None) == (retryable and budget_left)
        tasks._record_failure(
            self._context(job, execution.worker_id),
            execution.stage,
            execution.run_id,
            StageAttempt.objects.get(pk=execution.attempt_id),
            exc,
        )
        if retry is not None:
            self._retry(job, retry.retry_decision.retry_at)
            if current:
                event("a stage failed and will retry")
                self.current_attempts.discard(execution.attempt_id)
        else:
            self._finish(job, JobStatus.FAILED)
            if current:
                event("a stage failed for good" + (" (retries spent)" if retryable else ""))
                self._run_ended(execution.team_id)
                self.model[execution.team_id].status = PipelineStatus.FAILED

    def _reschedule(self, execution: Execution) -> None:
        """A rate limit: the stage continues in a new job, this one ends."""
        current = execution.attempt_id in self.current_attempts
        transitions.reschedule_stage(execution.attempt_id, timezone.now(), "GitHub rate limit")
        if current:
            event("a stage was rescheduled")
            self.current_attempts.discard(execution.attempt_id)
            assert self._current_job_id(execution.run_id) not in (None, execution.job.id)
        self._finish(execution.job, JobStatus.SUCCEEDED)

    # --- workers dying, time passing, the rescuer ---------------------------------------

    @precondition(lambda self: self.executions)
    @rule(data=st.data(), how=st.sampled_from([KILLED, PRUNED, HANGS]))
    def worker_dies(self, data: st.DataObject, how: str) -> None:
        busy = sorted({execution.worker_id for execution in self.executions.values()})
        self._kill(data.draw(st.sampled_from(busy), label="worker"), how=how)

    def _kill(self, worker_id: int, *, how: str) -> None:
        self.live_workers.remove(worker_id)
        self.deaths[worker_id] = how
        for job_id in [j for j, e in self.executions.items() if e.worker_id == worker_id]:
            execution = self.executions.pop(job_id)
            if how == HANGS:
                self.hung[job_id] = execution
            else:
                self.orphans[job_id] = worker_id
        if how == HANGS:
            # The process lives on with its lock, but its heartbeat stopped long ago.
            _sql(
                "UPDATE procrastinate_workers SET last_heartbeat = now() - make_interval("
                "secs => %s) WHERE id = %s",
                [settings.PIPELINE_STALLED_AFTER_SECONDS * 2, worker_id],
            )
        else:
            self.lock_connections.pop(worker_id).close()
            if how == PRUNED:
                _sql("DELETE FROM procrastinate_workers WHERE id = %s", [worker_id])
        if not self.live_workers:
            self.live_workers.append(self._start_worker())  # the supervisor replaces it

    @precondition(lambda self: self.lock_seen_missing - self.grace_passed)
    @rule()
    def time_passes(self) -> None:
        """More than the liveness grace passes after a rescuer saw locks missing."""
        _sql(
            "UPDATE pipeline_workerliveness SET lock_missing_since = now()"
            " - make_interval(secs => %s) WHERE lock_missing_since IS NOT NULL",
            [settings.PIPELINE_LIVENESS_GRACE_SECONDS + 1],
        )
        self.grace_passed |= self.lock_seen_missing

    def _dead(self, worker_id: int) -> bool:
        how = self.deaths.get(worker_id)
        return how in (PRUNED, HANGS) or (how == KILLED and worker_id in self.grace_passed)

    @precondition(lambda self: self.orphans or self.executions or self.hung)
    @rule()
    def rescue(self) -> None:
        """One rescue pass: jobs of dead workers are superseded by new current jobs (the
        pipeline fails once its stage lost more workers than its retry budget); jobs of live
        workers, and of killed workers still within the grace, are not touched."""
        held_by_dead = {
            job_id: execution.worker_id
            for job_id, execution in self.hung.items()
            if self._job(job_id)["status"] == "doing"
        }
        held_by_dead.update(self.orphans)
        stalled = {job_id for job_id, worker_id in held_by_dead.items() if self._dead(worker_id)}
        untouched = {
            job_id: self._job(job_id)
            for job_id in [*self.executions, *held_by_dead]
            if job_id not in stalled
        }
        current_jobs = {
            team_id: self._current_job_id(expected.run_id)
            for team_id, expected in self.model.items()
            if expected.status not in TERMINAL_STATUSES
        }

        result = rescue.rescue_stalled_jobs()
        self._heartbeat()  # date the notes of locks seen missing just now

        self.lock_seen_missing |= {w for w, how in self.deaths.items() if how != HANGS}
        assert set(result["rescued"]) == stalled, "rescued = doing jobs of dead workers only"
        assert result["repaired"] == [] and result["failed_runs"] == []
        for job_id, before in untouched.items():
            assert self._job(job_id) == before, f"job {job_id} of a live worker was touched"
        for job_id in stalled:
            assert self._job(job_id)["status"] == "aborted", "a rescued stage job is ended"
            execution = self.hung.get(job_id)
            if execution is not None:
                self.superseded[job_id] = self.hung.pop(job_id)
        for team_id, job_id in current_jobs.items():
            if job_id not in stalled:
                continue
            expected = self.model[team_id]
            stage = expected.status
            attempt_ids = set(
                StageAttempt.objects.filter(job_id=job_id).values_list("pk", flat=True)
            )
            if attempt_ids & self.current_attempts:
                self.lost[(expected.run_id, stage)] += 1
                self.current_attempts -= attempt_ids
            new_job = self._current_job_id(expected.run_id)
            if self.lost[(expected.run_id, stage)] > settings.PIPELINE_STAGE_MAX_RETRIES:
                event("a stage that kept losing its worker failed its pipeline")
                expected.status = PipelineStatus.FAILED
                self._run_ended(team_id)
                assert new_job is None
            else:
                event("a rescue superseded a stage job")
                assert new_job not in (None, job_id)
                assert self._job(new_job)["status"] == "todo"
        self.orphans = {j: w for j, w in self.orphans.items() if j not in stalled}

    @precondition(lambda self: self.superseded)
    @rule(data=st.data(), outcome=st.sampled_from(LATE_OUTCOMES))
    def superseded_job_finishes_late(self, data: st.DataObject, outcome: str) -> None:
        """A hung worker comes back after the rescuer superseded its job and ends it the way
        procrastinate's worker would: our code must change nothing, and procrastinate's own
        write about the old job must not bring it back."""
        job_id = data.draw(st.sampled_from(sorted(self.superseded)), label="late execution")
        execution = self.superseded.pop(job_id)
        assert execution.attempt_id not in self.current_attempts
        event(f"a superseded job {outcome} late")
        if outcome == SUCCEEDS:
            assert transitions.complete_stage(execution.attempt_id, {"items": 1}) is None
            final = JobStatus.SUCCEEDED
            retry = None
        elif outcome == RESCHEDULES:
            transitions.reschedule_stage(execution.attempt_id, timezone.now(), "late")
            final, retry = JobStatus.SUCCEEDED, None
        else:
            exc = StageError("GitHub answered with an error.", retryable=outcome == FAILS_RETRYABLE)
            retry = app.tasks[execution.job.task_name].get_retry_exception(exc, execution.job)
            tasks._record_failure(
                self._context(execution.job, execution.worker_id),
                execution.stage,
                execution.run_id,
                StageAttempt.objects.get(pk=execution.attempt_id),
                exc,
            )
            final = JobStatus.FAILED
        try:
            if retry is not None:
                self._retry(execution.job, retry.retry_decision.retry_at)
            else:
                self._finish(execution.job, final)
        except ConnectorException:
            pass  # procrastinate refuses to finish a job that is not todo/doing: it logs it
        assert self._job(job_id)["status"] == "aborted", (
            f"procrastinate's late {outcome!r} write brought superseded job {job_id} back"
        )

    # --- checks after every step --------------------------------------------------------

    @invariant()
    def status_and_queue_agree(self) -> None:
        self._heartbeat()
        assert find_drift() == []
        # Jobs a worker still holds in doing while its execution no longer carries a stage
        # (cancelled, or held by a dead worker until the rescuer ends it).
        tolerated = (
            set(self.orphans)
            | set(self.hung)
            | {
                job_id
                for job_id, execution in self.executions.items()
                if execution.attempt_id not in self.current_attempts
            }
        )
        for team in self.teams:
            expected = self.model[team.pk]
            team.refresh_from_db()
            assert team.pipeline_status == expected.status, f"team {team.pk}"
            live = _sql(
                "SELECT job.id, job.status::text, (job.args ->> 'run_id')::bigint, job.task_name"
                "  FROM procrastinate_jobs job"
                "  JOIN pipeline_pipelinerun run ON run.id = (job.args ->> 'run_id')::bigint"
                " WHERE run.team_id = %s AND job.task_name = ANY(%s)"
                "   AND job.status IN ('todo', 'doing')",
                [team.pk, STAGE_TASK_NAMES],
            )
            unaccounted = [row for row in live if row[0] not in tolerated]
            if expected.status in TERMINAL_STATUSES:
                assert unaccounted == [], f"team {team.pk} is {expected.status} but has {live}"
                assert not PipelineRun.objects.filter(
                    team=team, state=PipelineRun.State.RUNNING
                ).exists()
                continue
            run = PipelineRun.objects.get(team=team, state=PipelineRun.State.RUNNING)
            assert run.pk == expected.run_id
            assert run.stage == expected.status
            # The current job may be held by a dead worker, awaiting rescue: still live work.
            assert run.current_job_id in {row[0] for row in live}, (
                f"team {team.pk}: the current job {run.current_job_id} is not live: {live}"
            )
            assert {row[0] for row in unaccounted} <= {run.current_job_id}, (
                f"team {team.pk}: expected one live job, the current {run.current_job_id} of "
                f"{run.stage}; live: {live}"
            )
            [current] = [row for row in live if row[0] == run.current_job_id]
            assert current[2] == run.pk
            assert current[3] == queue.STAGE_JOBS[run.stage].task_name

    @invariant()
    def every_stage_succeeds_once(self) -> None:
        succeeded = Counter(
            StageAttempt.objects.filter(outcome=StageAttempt.Outcome.SUCCEEDED).values_list(
                "run_id", "stage"
            )
        )
        assert succeeded == self.successes
        assert max(succeeded.values(), default=0) <= 1

    @invariant()
    def one_email_per_completed_onboarding(self) -> None:
        outbox = list(EmailOutbox.objects.values_list("run_id", flat=True))
        assert sorted(outbox) == sorted(self.completed_onboardings)
        sent = EmailOutbox.objects.filter(status=EmailOutbox.Status.SENT).count()
        assert len(mail.outbox) == sent <= len(self.completed_onboardings)

    @invariant()
    def running_attempts_are_current_or_held(self) -> None:
        running = set(
            StageAttempt.objects.filter(outcome=StageAttempt.Outcome.RUNNING).values_list(
                "pk", flat=True
            )
        )
        held = {e.attempt_id for e in [*self.executions.values(), *self.hung.values()]}
        orphaned = set(
            StageAttempt.objects.filter(job_id__in=list(self.orphans)).values_list("pk", flat=True)
        )
        assert running <= held | orphaned


MACHINE_SETTINGS = hypothesis_settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# A failing sequence is shrunk for minutes before Hypothesis prints it: give it the time
# (a passing run takes one to three minutes on a loaded 2-core machine).
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_random_sequences_of_starts_failures_crashes_and_rescues_never_drift():
    try:
        run_state_machine_as_test(PipelineMachine, settings=MACHINE_SETTINGS)
    finally:
        # procrastinate's tables are not Django's: the test flush would leave the last
        # example's jobs and workers to the tests that follow.
        _sql(
            "TRUNCATE procrastinate_events, procrastinate_jobs, procrastinate_periodic_defers,"
            " procrastinate_workers, pipeline_workerliveness RESTART IDENTITY CASCADE"
        )
