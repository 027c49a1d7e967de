"""Random sequences of pipeline events never let status and queue drift.

A Hypothesis state machine plays several teams and several workers against the real
PostgreSQL database: it starts pipelines, lets workers take jobs with procrastinate's own SQL
(``procrastinate_fetch_job_v2``), hands stages off, fails them (transient and final), retries
failed pipelines, kills workers and rescues their jobs, all through the real
``pipeline.transitions`` and ``pipeline.rescue`` functions. After every step it runs
``pipeline.invariant.find_drift`` (the query ``manage.py pipeline check`` runs) and compares the
database with its own model: each team's status, one live job carrying the current stage,
no live stage job for a finished pipeline, no stage that succeeded twice, one e-mail per
completed run.

Why in-process workers and not worker processes: the order of events is then chosen by
Hypothesis, so a failing sequence is shrunk and replayed exactly. A worker here is what the
rescue's liveness rule sees of a worker: a ``procrastinate_workers`` row whose heartbeat is
refreshed before every step while it lives. It dies the way that rule defines death (its
heartbeat gets old, or its row is pruned), never by waiting for a clock.

The retry budget and the stalled threshold are the shipped settings; examples are
derandomized so CI replays the same sequences on every run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter

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
from procrastinate.jobs import Job
from procrastinate.jobs import Status as JobStatus

from onboarding.models import Membership, Repository, Team
from pipeline import queue, rescue, tasks, transitions
from pipeline.errors import PipelineNotRetryable, StageError
from pipeline.invariant import find_drift
from pipeline.models import EmailOutbox, PipelineRun, StageAttempt
from pipeline.stages import email as email_stage
from pipeline.status import STAGE_ORDER, TERMINAL_STATUSES, PipelineStatus, next_status

TEAMS = 3
MAX_LIVE_WORKERS = 3
QUEUE_CHOICES = [None, *sorted({spec.queue for spec in queue.STAGE_JOBS.values()})]
STAGE_TASK_NAMES = list(queue.STAGE_BY_TASK_NAME)
SUCCEEDS = "succeeds"
FAILS_RETRYABLE = "fails, retryable"
FAILS_FOR_GOOD = "fails for good"
RESCHEDULES = "reschedules"
WORKER_DIES = "its worker dies"
WORKER_DIES_PRUNED = "its worker dies and its row is pruned"
# Mostly successes, so that sequences of a few dozen steps reach the later stages.
OUTCOMES = [
    *[SUCCEEDS] * 4,
    FAILS_RETRYABLE,
    FAILS_FOR_GOOD,
    RESCHEDULES,
    WORKER_DIES,
    WORKER_DIES_PRUNED,
]


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
        "TRUNCATE onboarding_team, auth_user, procrastinate_jobs, procrastinate_workers"
        " RESTART IDENTITY CASCADE"
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
        self.live_workers: list[int] = [self._register_worker()]
        self.dead_workers: set[int] = set()
        # job id -> execution, for jobs held by live workers
        self.executions: dict[int, Execution] = {}
        # job id -> worker id, for jobs left in doing by a worker that died
        self.orphans: dict[int, int] = {}
        # stage successes per (run id, stage), as the model counts them
        self.successes: Counter[tuple[int, str]] = Counter()
        self.completed_runs: set[int] = set()

    # --- workers, as procrastinate's worker does it -------------------------------------

    def _register_worker(self) -> int:
        [(worker_id,)] = _sql("SELECT worker_id FROM procrastinate_register_worker_v1()")
        return worker_id

    def _heartbeat_live_workers(self) -> None:
        for worker_id in self.live_workers:
            _connector().execute_query(query=sql.queries["update_heartbeat"], worker_id=worker_id)

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

    # --- rules ------------------------------------------------------------------------

    @initialize(teams=st.sets(st.integers(0, TEAMS - 1), min_size=1))
    def start_some_pipelines(self, teams: set[int]) -> None:
        for team in sorted(teams):
            self.start_pipeline(team)

    @precondition(lambda self: self._teams_in(TERMINAL_STATUSES))
    @rule(team=st.integers(0, TEAMS - 1))
    def start_pipeline(self, team: int) -> None:
        team_row = self.teams[team]
        expected = self.model[team_row.pk]
        run = transitions.start_pipeline(team_row, [self.repository_ids[team_row.pk]])
        if expected.status in TERMINAL_STATUSES:
            assert run.pk != expected.run_id, "a finished pipeline starts a new run"
            expected.status, expected.run_id = PipelineStatus.SYNCING, run.pk
        else:
            assert run.pk == expected.run_id, "a start while running returns the running run"

    @precondition(lambda self: len(self.live_workers) < MAX_LIVE_WORKERS)
    @rule()
    def add_worker(self) -> None:
        self.live_workers.append(self._register_worker())

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

    @rule(data=st.data(), outcomes=st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=4))
    def run_jobs(self, data: st.DataObject, outcomes: list[str]) -> None:
        """A live worker of every queue takes jobs one after the other and runs each to its
        end."""
        worker_id = data.draw(st.sampled_from(self.live_workers), label="worker")
        for outcome in outcomes:
            if worker_id not in self.live_workers:
                break
            execution = self._take(worker_id, None)
            if execution is not None:
                self._end(execution, outcome)
            self.status_and_queue_agree()

    @precondition(lambda self: self.executions)
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def running_job_ends(self, data: st.DataObject, outcome: str) -> None:
        """One of the jobs held by a live worker ends."""
        job_id = data.draw(st.sampled_from(sorted(self.executions)), label="execution")
        self._end(self.executions.pop(job_id), outcome)

    def _end(self, execution: Execution, outcome: str) -> None:
        if outcome in (WORKER_DIES, WORKER_DIES_PRUNED):
            event("a worker died mid-stage")
            self.executions[execution.job.id] = execution
            self._kill(execution.worker_id, pruned=outcome == WORKER_DIES_PRUNED)
        elif outcome == SUCCEEDS:
            self._succeed(execution)
        elif outcome == RESCHEDULES:
            self._reschedule(execution)
        else:
            self._fail(execution, retryable=outcome == FAILS_RETRYABLE)

    def _succeed(self, execution: Execution) -> None:
        """The hand-off, then (a separate, later write) procrastinate's finish."""
        new_status = transitions.complete_stage(execution.attempt_id, {"items": 1})
        assert new_status == next_status(execution.stage), (
            f"the hand-off of {execution.stage} (run {execution.run_id}) returned {new_status}"
        )
        self._record_success(execution)
        # The tolerated transient: our commit is in, the job still shows doing.
        assert find_drift() == []
        self._finish(execution.job, JobStatus.SUCCEEDED)

    def _record_success(self, execution: Execution) -> None:
        self.successes[(execution.run_id, execution.stage)] += 1
        expected = self.model[execution.team_id]
        expected.status = next_status(execution.stage)
        if expected.status == PipelineStatus.COMPLETE:
            event("a pipeline completed")
            self.completed_runs.add(execution.run_id)

    def _fail(self, execution: Execution, *, retryable: bool) -> None:
        """A stage raises: the worker's failure path (tasks._record_failure), then
        procrastinate's retry (same job id, attempts + 1) or final failure."""
        job = execution.job
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
            event("a stage failed and will retry")
            queue.job_manager().retry_job_by_id(
                job_id=job.id, retry_at=retry.retry_decision.retry_at or timezone.now()
            )
        else:
            event("a stage failed for good" + (" (retries spent)" if retryable else ""))
            self._finish(job, JobStatus.FAILED)
            self.model[execution.team_id].status = PipelineStatus.FAILED

    def _reschedule(self, execution: Execution) -> None:
        """A rate limit: the stage continues in a new job, this one ends."""
        event("a stage was rescheduled")
        transitions.reschedule_stage(execution.attempt_id, timezone.now(), "GitHub rate limit")
        new_job_id = self._current_job_id(execution.run_id)
        assert new_job_id not in (None, execution.job.id)
        self._finish(execution.job, JobStatus.SUCCEEDED)

    @precondition(lambda self: self.executions)
    @rule(data=st.data(), pruned=st.booleans())
    def worker_dies(self, data: st.DataObject, pruned: bool) -> None:
        """SIGKILL: the worker's jobs stay in doing; its heartbeat stops (and another worker
        may already have pruned its row)."""
        busy = sorted({execution.worker_id for execution in self.executions.values()})
        self._kill(data.draw(st.sampled_from(busy), label="worker"), pruned=pruned)

    def _kill(self, worker_id: int, *, pruned: bool) -> None:
        self.live_workers.remove(worker_id)
        self.dead_workers.add(worker_id)
        for job_id in [j for j, e in self.executions.items() if e.worker_id == worker_id]:
            del self.executions[job_id]
            self.orphans[job_id] = worker_id
        if pruned:
            _sql("DELETE FROM procrastinate_workers WHERE id = %s", [worker_id])
        else:
            _sql(
                "UPDATE procrastinate_workers SET last_heartbeat = now() - make_interval("
                "secs => %s) WHERE id = %s",
                [settings.PIPELINE_STALLED_AFTER_SECONDS * 10, worker_id],
            )
        if not self.live_workers:
            self.live_workers.append(self._register_worker())  # the supervisor replaces it

    @precondition(lambda self: self.orphans or self.executions)
    @rule()
    def rescue(self) -> None:
        """The rescuer: jobs of dead workers are re-queued (or given up once their retries
        are spent, which fails their pipeline); jobs of live workers are never touched."""
        orphan_states = {job_id: self._job(job_id) for job_id in self.orphans}
        stalled = {job_id for job_id, job in orphan_states.items() if job["status"] == "doing"}
        assert rescue.stalled_job_ids() == stalled, "stalled = doing jobs of dead workers only"
        held = {job_id: self._job(job_id) for job_id in self.executions}
        current_jobs = {
            team_id: self._current_job_id(expected.run_id)
            for team_id, expected in self.model.items()
            if expected.status not in TERMINAL_STATUSES
        }

        result = rescue.rescue_stalled_jobs()
        if result["requeued"]:
            event("a rescue re-queued a job")

        assert set(result["requeued"]) | set(result["given_up"]) == stalled
        for job_id in stalled:
            spent = orphan_states[job_id]["attempts"] >= settings.PIPELINE_STAGE_MAX_RETRIES
            assert (job_id in result["given_up"]) == spent
            assert self._job(job_id)["status"] == ("failed" if spent else "todo")
        for job_id, before in held.items():
            assert self._job(job_id) == before, f"job {job_id} of a live worker was touched"
        # A pipeline fails exactly when the job carrying its stage was given up.
        given_up_teams = {t for t, job_id in current_jobs.items() if job_id in result["given_up"]}
        failed_teams = {self._team_of_run(run_id) for run_id in result["failed_runs"]}
        assert failed_teams == given_up_teams
        for team_id in given_up_teams:
            event("a rescue gave up a stage job and failed its pipeline")
            self.model[team_id].status = PipelineStatus.FAILED
        self.orphans = {j: w for j, w in self.orphans.items() if j not in stalled}

    @precondition(lambda self: self._teams_in({PipelineStatus.FAILED}))
    @rule(team=st.integers(0, TEAMS - 1))
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
        expected.status = failed_stage
        assert failed_stage in STAGE_ORDER

    # --- checks after every step --------------------------------------------------------

    @invariant()
    def status_and_queue_agree(self) -> None:
        self._heartbeat_live_workers()
        assert find_drift() == []
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
            # A doing job held by a dead worker after our commit may remain (the tolerated
            # transient); anything else live is work the status must account for.
            unaccounted = [row for row in live if row[0] not in self.orphans]
            if expected.status in TERMINAL_STATUSES:
                assert unaccounted == [], f"team {team.pk} is {expected.status} but has {live}"
                assert not PipelineRun.objects.filter(
                    team=team, state=PipelineRun.State.RUNNING
                ).exists()
                continue
            run = PipelineRun.objects.get(team=team, state=PipelineRun.State.RUNNING)
            assert run.pk == expected.run_id
            assert run.stage == expected.status
            carrying = [
                row
                for row in live
                if row[2] == run.pk and row[3] == queue.STAGE_JOBS[run.stage].task_name
            ]
            assert run.current_job_id in {row[0] for row in carrying}, (
                f"team {team.pk}: the current job {run.current_job_id} is not live ({live})"
            )
            others = [row for row in unaccounted if row not in carrying]
            assert others == [], f"team {team.pk}: live jobs of other stages or runs: {others}"

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
    def one_email_per_completed_run(self) -> None:
        outbox = list(EmailOutbox.objects.values_list("run_id", flat=True))
        assert sorted(outbox) == sorted(self.completed_runs)
        sent = EmailOutbox.objects.filter(status=EmailOutbox.Status.SENT).count()
        assert len(mail.outbox) == sent <= len(self.completed_runs)

    @invariant()
    def running_attempts_belong_to_running_jobs(self) -> None:
        running = set(
            StageAttempt.objects.filter(outcome=StageAttempt.Outcome.RUNNING).values_list(
                "job_id", flat=True
            )
        )
        # An attempt left running by a dead worker is closed by the next begin of its stage.
        assert running <= set(self.executions) | set(self.orphans) | _rescued_job_ids()


def _rescued_job_ids() -> set[int]:
    return {
        row[0]
        for row in _sql(
            "SELECT id FROM procrastinate_jobs WHERE status = 'todo' AND task_name = ANY(%s)",
            [STAGE_TASK_NAMES],
        )
    }


MACHINE_SETTINGS = hypothesis_settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# A failing sequence is shrunk for minutes before Hypothesis prints it: give it the time
# (a passing run takes about a minute on a loaded 2-core machine).
@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_random_sequences_of_starts_failures_crashes_and_rescues_never_drift():
    run_state_machine_as_test(PipelineMachine, settings=MACHINE_SETTINGS)
