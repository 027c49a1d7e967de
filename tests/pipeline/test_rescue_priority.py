"""A rescued stage does not queue behind the backlog: the job that supersedes a dead worker's
execution is the next one any worker fetches, ahead of older queued stage jobs."""

from __future__ import annotations

import pytest
from django.db import connection

from onboarding.models import Repository, Team
from pipeline import rescue, transitions

pytestmark = pytest.mark.django_db


def sql(query: str, params: list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else None


def start(name: str, github_id: int):
    team = Team.objects.create(name=name)
    repository = Repository.objects.create(team=team, github_id=github_id, full_name=f"{name}/x")
    return transitions.start_pipeline(team, [repository.pk])


def test_the_job_that_supersedes_a_dead_workers_stage_is_fetched_before_the_backlog():
    victim = start("victim", 1)
    victim.refresh_from_db()
    [(dead,)] = sql(
        "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')"
        " RETURNING id"
    )
    sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
        [dead, victim.current_job_id],
    )
    transitions.begin_stage(victim.pk, victim.stage, job_id=victim.current_job_id)
    backlog = [start(f"queued-{i}", 10 + i) for i in range(5)]  # newer jobs, already waiting

    rescue.rescue_stalled_jobs()

    victim.refresh_from_db()
    assert victim.current_job_id not in {run.current_job_id for run in backlog}
    [(live,)] = sql("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
    [(fetched_id, *_)] = sql("SELECT * FROM procrastinate_fetch_job_v2(NULL, %s)", [live])
    assert fetched_id == victim.current_job_id
