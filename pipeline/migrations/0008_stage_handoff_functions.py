"""The two transitions every stage job makes, as PL/pgSQL functions: one round trip each.

``pipeline.transitions.stages.begin_stage`` and ``complete_stage`` call these. A job's begin
and hand-off were 16 statements in two Django transactions (7 and 9 round trips, most of the
job's time outside its body: bench/engine, issue 9); here each is one ``SELECT f(...)`` that
runs as its own transaction. The logic is the one the Python docstrings describe, statement for
statement: lock the team row first (the order every transition takes), then read the run and
attempt after the lock (each statement of a VOLATILE function in READ COMMITTED takes a new
snapshot, so rows changed by whoever held the lock are seen as committed), compare-and-swap on
state, stage and current job, and only then write. What comes next (the next stage, its task,
queue and priority by run kind, the e-mail job) is passed in by the caller as JSON, so Python
stays the one place that knows the pipeline's order and the job specs. Jobs are deferred with
procrastinate's own ``procrastinate_defer_jobs_v1``, so its insert trigger and NOTIFY apply.

Timestamps are ``clock_timestamp()``, the database's clock at the write, so the hand-off's
recorded finish is as late as the work it records.
"""

from django.db import migrations

BEGIN_STAGE = r"""
CREATE FUNCTION pipeline_begin_stage_v1(
    p_run_id bigint,
    p_stage text,
    p_job_id bigint,
    p_job_attempts integer,
    p_lost_message text,
    p_channel text
) RETURNS jsonb
    LANGUAGE plpgsql
AS $$
DECLARE
    v_team onboarding_team%ROWTYPE;
    v_run pipeline_pipelinerun%ROWTYPE;
    v_attempt pipeline_stageattempt%ROWTYPE;
    v_now timestamptz;
    v_earlier integer;
BEGIN
    SELECT t.* INTO v_team
        FROM onboarding_team t JOIN pipeline_pipelinerun r ON r.team_id = t.id
        WHERE r.id = p_run_id
        FOR UPDATE OF t;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('result', 'missing');
    END IF;
    SELECT * INTO v_run FROM pipeline_pipelinerun WHERE id = p_run_id;
    IF v_run.state <> 'running' OR v_run.stage <> p_stage OR v_team.pipeline_status <> p_stage THEN
        RETURN jsonb_build_object('result', 'not_current', 'team_status', v_team.pipeline_status);
    END IF;
    IF p_job_id IS NOT NULL AND v_run.current_job_id IS NOT NULL
            AND v_run.current_job_id <> p_job_id THEN
        RETURN jsonb_build_object('result', 'not_current_job', 'current_job_id', v_run.current_job_id);
    END IF;
    v_now := clock_timestamp();
    -- An attempt still marked running belongs to a worker that died before recording its end.
    UPDATE pipeline_stageattempt
        SET outcome = 'failed', finished_at = v_now, error = p_lost_message,
            duration_ms = greatest(0, floor(extract(epoch FROM v_now - started_at) * 1000))::integer
        WHERE run_id = p_run_id AND stage = p_stage AND outcome = 'running';
    SELECT count(*) INTO v_earlier FROM pipeline_stageattempt
        WHERE run_id = p_run_id AND stage = p_stage;
    INSERT INTO pipeline_stageattempt
            (run_id, stage, attempt, job_id, job_attempts, started_at, finished_at, duration_ms,
             outcome, error, counts)
        VALUES (p_run_id, p_stage, v_earlier + 1, p_job_id, p_job_attempts, v_now, NULL, NULL,
                'running', '', '{}'::jsonb)
        RETURNING * INTO v_attempt;
    PERFORM pg_notify(p_channel, jsonb_build_object(
        'team', v_team.id, 'run', p_run_id, 'status', p_stage, 'event', 'stage_started',
        'attempt', v_attempt.id)::text);
    RETURN jsonb_build_object('result', 'begun', 'attempt', to_jsonb(v_attempt), 'run', to_jsonb(v_run));
END;
$$;
"""

COMPLETE_STAGE = r"""
CREATE FUNCTION pipeline_complete_stage_v1(
    p_attempt_id bigint,
    p_counts jsonb,
    p_next jsonb,
    p_email_job jsonb,
    p_channel text
) RETURNS jsonb
    LANGUAGE plpgsql
AS $$
DECLARE
    v_team onboarding_team%ROWTYPE;
    v_run pipeline_pipelinerun%ROWTYPE;
    v_attempt pipeline_stageattempt%ROWTYPE;
    v_next jsonb;
    v_status text;
    v_job_id bigint;
    v_outbox_id bigint;
    v_now timestamptz;
BEGIN
    SELECT t.* INTO v_team
        FROM onboarding_team t
        JOIN pipeline_pipelinerun r ON r.team_id = t.id
        JOIN pipeline_stageattempt a ON a.run_id = r.id
        WHERE a.id = p_attempt_id
        FOR UPDATE OF t;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('result', 'missing');
    END IF;
    SELECT * INTO v_attempt FROM pipeline_stageattempt WHERE id = p_attempt_id;
    SELECT * INTO v_run FROM pipeline_pipelinerun WHERE id = v_attempt.run_id;
    IF v_attempt.outcome <> 'running'
            OR (v_attempt.job_id IS NOT NULL AND v_run.current_job_id IS NOT NULL
                AND v_run.current_job_id <> v_attempt.job_id)
            OR v_run.state <> 'running' OR v_run.stage <> v_attempt.stage
            OR v_team.pipeline_status <> v_attempt.stage THEN
        RETURN jsonb_build_object('result', 'stale');
    END IF;
    v_next := p_next -> v_attempt.stage;
    v_status := v_next ->> 'status';
    -- The job goes in first: if anything after it fails, the whole hand-off rolls back with it.
    IF v_next ? 'task' THEN
        v_job_id := (procrastinate_defer_jobs_v1(ARRAY[ROW(
            v_next ->> 'queue', v_next ->> 'task', (v_next -> 'priority' ->> v_run.kind)::integer,
            NULL, NULL, jsonb_build_object('run_id', v_run.id), NULL
        )]::procrastinate_job_to_defer_v1[]))[1];
    ELSIF v_run.kind = 'onboarding' THEN
        -- Only onboarding tells the user by e-mail; nightly and re-score runs finish quietly.
        -- The recipients are the team's admins when the e-mail job sends (it records them).
        INSERT INTO pipeline_emailoutbox
                (run_id, team_id, status, recipients, attempts, error, job_id, created_at, sent_at)
            VALUES (v_run.id, v_team.id, 'pending', '[]'::jsonb, 0, '',
                    NULL, clock_timestamp(), NULL)
            RETURNING id INTO v_outbox_id;
        UPDATE pipeline_emailoutbox SET job_id = (procrastinate_defer_jobs_v1(ARRAY[ROW(
                p_email_job ->> 'queue', p_email_job ->> 'task',
                (p_email_job ->> 'priority')::integer, NULL, NULL,
                jsonb_build_object('outbox_id', v_outbox_id), NULL
            )]::procrastinate_job_to_defer_v1[]))[1]
            WHERE id = v_outbox_id;
    END IF;
    v_now := clock_timestamp();
    UPDATE pipeline_stageattempt
        SET outcome = 'succeeded', finished_at = v_now, error = '',
            counts = coalesce(p_counts, '{}'::jsonb),
            duration_ms = greatest(0, floor(extract(epoch FROM v_now - started_at) * 1000))::integer
        WHERE id = p_attempt_id;
    IF v_job_id IS NULL THEN
        UPDATE pipeline_pipelinerun
            SET stage = v_status, state = 'complete', finished_at = v_now, current_job_id = NULL
            WHERE id = v_run.id;
        UPDATE onboarding_team SET pipeline_status = v_status, pipeline_completed_at = v_now
            WHERE id = v_team.id;
    ELSE
        UPDATE pipeline_pipelinerun SET stage = v_status, current_job_id = v_job_id
            WHERE id = v_run.id;
        UPDATE onboarding_team SET pipeline_status = v_status WHERE id = v_team.id;
    END IF;
    PERFORM pg_notify(p_channel, jsonb_build_object(
        'team', v_team.id, 'run', v_run.id, 'status', v_status, 'event', 'stage_completed',
        'attempt', p_attempt_id)::text);
    RETURN jsonb_build_object(
        'result', 'handed_off', 'status', v_status, 'team_id', v_team.id, 'run_id', v_run.id);
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [
        ("pipeline", "0007_weekly_metrics_per_run"),
        ("onboarding", "0004_repository_listing"),
        ("procrastinate", "0041_post_retry_failed_job"),
    ]

    operations = [
        migrations.RunSQL(
            BEGIN_STAGE,
            reverse_sql="DROP FUNCTION pipeline_begin_stage_v1(bigint, text, bigint, integer, text, text)",
        ),
        migrations.RunSQL(
            COMPLETE_STAGE,
            reverse_sql=(
                "DROP FUNCTION pipeline_complete_stage_v1(bigint, jsonb, jsonb, jsonb, text)"
            ),
        ),
    ]
