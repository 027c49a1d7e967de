"""The status/queue invariant as one SQL query.

For every team whose pipeline is running there is exactly one live procrastinate job (todo,
doing, or todo scheduled for a retry) for the current stage of its running run, and no live job
for any other stage of that team. Teams in a terminal state (not_started, complete, failed) have
no live stage job. The team's status, its running run and the run's stage agree.

One transient is tolerated: the job of a stage that just handed off (or failed, or rescheduled)
may still show ``doing`` between our commit and procrastinate recording the job's end. The
history row of that very execution (job id and procrastinate's attempts counter) is then already
finished, and that is exactly what the query allows; a retry or a rescue of the same job (same
id, higher counter) is a live job again. A job of a run that ``cancel_pipeline`` or
``restart_pipeline`` ended was asked to abort in that same transaction and is not live either.
The completion e-mail is an outbox job, not a stage job, and is not part of this check.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection

from pipeline.queue import STAGE_JOBS
from pipeline.status import RUNNING_STATUSES

DRIFT_SQL = """
WITH stage_task(stage, task_name) AS (
    SELECT * FROM unnest(%(stages)s::text[], %(task_names)s::text[])
),
live_job AS (
    SELECT job.id, job.status::text AS job_status, st.stage, run.team_id,
           (job.args ->> 'run_id')::bigint AS run_id
      FROM procrastinate_jobs job
      JOIN stage_task st ON st.task_name = job.task_name
      LEFT JOIN pipeline_pipelinerun run ON run.id = (job.args ->> 'run_id')::bigint
     WHERE job.status IN ('todo', 'doing')
       -- a job of a run that cancel/restart ended: it was asked to abort in the same
       -- transaction, and when it runs it does nothing (begin_stage: not current)
       AND NOT (job.abort_requested AND run.state IS DISTINCT FROM 'running')
       -- the tolerated transient: a doing job whose current execution (same job id, same
       -- procrastinate attempts counter: retries reuse the id and bump the counter) is
       -- already recorded as finished
       AND NOT (job.status = 'doing' AND EXISTS (
               SELECT 1 FROM pipeline_stageattempt att
                WHERE att.job_id = job.id AND att.job_attempts = job.attempts
                  AND att.finished_at IS NOT NULL
                  -- a retrying attempt's job goes back to todo: it is still the live job
                  AND att.outcome <> 'retrying'))
),
team_state AS (
    SELECT team.id AS team_id, team.pipeline_status,
           run.id AS run_id, run.stage AS run_stage, run.current_job_id,
           (SELECT count(*) FROM pipeline_pipelinerun r
             WHERE r.team_id = team.id AND r.state = 'running') AS running_runs
      FROM onboarding_team team
      LEFT JOIN pipeline_pipelinerun run ON run.team_id = team.id AND run.state = 'running'
),
per_team AS (
    SELECT ts.team_id, ts.pipeline_status, ts.run_id, ts.run_stage, ts.running_runs,
           count(lj.id) FILTER (WHERE lj.run_id = ts.run_id
                                  AND lj.stage = ts.pipeline_status
                                  AND (ts.current_job_id IS NULL
                                       OR lj.id = ts.current_job_id)) AS current_jobs,
           -- a stale duplicate of the current stage (a rescued job whose stage had been
           -- rescheduled into a new job) is harmless: begin_stage ignores it
           count(lj.id) FILTER (WHERE NOT (lj.run_id IS NOT DISTINCT FROM ts.run_id
                                  AND lj.stage = ts.pipeline_status)) AS other_jobs,
           array_remove(array_agg(lj.id ORDER BY lj.id), NULL) AS live_job_ids
      FROM team_state ts
      LEFT JOIN live_job lj ON lj.team_id = ts.team_id
     GROUP BY ts.team_id, ts.pipeline_status, ts.run_id, ts.run_stage, ts.current_job_id,
              ts.running_runs
),
orphan AS (
    -- live stage jobs whose run no longer exists
    SELECT NULL::bigint AS team_id, NULL::text AS pipeline_status, lj.run_id,
           NULL::text AS run_stage, 0::bigint AS running_runs, 0::bigint AS current_jobs,
           1::bigint AS other_jobs, ARRAY[lj.id] AS live_job_ids
      FROM live_job lj WHERE lj.team_id IS NULL
)
SELECT * FROM (
    SELECT *, CASE
        WHEN pipeline_status = ANY(%(running)s::text[]) AND running_runs <> 1
            THEN 'status says running but the team has ' || running_runs || ' running runs'
        WHEN pipeline_status = ANY(%(running)s::text[]) AND run_stage <> pipeline_status
            THEN 'status ' || pipeline_status || ' but the run is in ' || run_stage
        WHEN pipeline_status = ANY(%(running)s::text[]) AND current_jobs <> 1
            THEN current_jobs || ' live jobs for the current stage (expected 1)'
        WHEN NOT (pipeline_status = ANY(%(running)s::text[])) AND running_runs > 0
            THEN 'status ' || pipeline_status || ' but a run is still running'
        WHEN other_jobs > 0
            THEN other_jobs || ' live jobs for stages that are not current'
    END AS problem
      FROM (SELECT * FROM per_team UNION ALL SELECT * FROM orphan) rows
) checked
WHERE problem IS NOT NULL
ORDER BY team_id NULLS FIRST
"""


@dataclass(frozen=True)
class Drift:
    team_id: int | None
    pipeline_status: str | None
    run_id: int | None
    live_job_ids: list[int]
    problem: str


def find_drift() -> list[Drift]:
    """Every team whose status and queue disagree (empty list: no drift)."""
    stages = list(STAGE_JOBS)
    params = {
        "stages": stages,
        "task_names": [STAGE_JOBS[s].task_name for s in stages],
        "running": sorted(RUNNING_STATUSES),
    }
    with connection.cursor() as cursor:
        cursor.execute(DRIFT_SQL, params)
        columns = [c.name for c in cursor.description]
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    return [
        Drift(
            team_id=row["team_id"],
            pipeline_status=row["pipeline_status"],
            run_id=row["run_id"],
            live_job_ids=list(row["live_job_ids"] or []),
            problem=row["problem"],
        )
        for row in rows
    ]
