"""Retention with the shipped defaults: finished jobs and their events older than 7 days are
deleted, younger ones and live jobs (whatever their age) are kept, the deletion runs every hour
(not every second of some minutes: procrastinate's sixth cron field is seconds), and a real worker
runs it."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone
from procrastinate.contrib.django import app

from pipeline import queue, retention
from tests.conftest import wait_for

EMAIL = queue.EMAIL_JOB


def sql(query: str, params: list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])
        return cursor.fetchall() if cursor.description else None


def job(status: str, days_ago: float) -> int:
    """A job whose whole history (every event) lies ``days_ago`` days back."""
    job_id = queue.defer(EMAIL, outbox_id=0)
    sql("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", [status, job_id])
    sql(
        "UPDATE procrastinate_events SET at = now() - make_interval(secs => %s) WHERE job_id = %s",
        [days_ago * 86400, job_id],
    )
    return job_id


def job_ids() -> set[int]:
    return {row[0] for row in sql("SELECT id FROM procrastinate_jobs")}


@pytest.mark.django_db
def test_finished_jobs_older_than_a_week_go_with_their_events_and_the_rest_stays():
    old = [job(status, 8) for status in ("succeeded", "failed", "cancelled", "aborted")]
    recent = job("succeeded", 6)
    live = [job("todo", 30), job("doing", 30)]

    assert retention.delete_finished_jobs() == len(old)

    assert job_ids() == {recent, *live}
    assert sql("SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%s)", [old]) == [(0,)]


@pytest.mark.django_db
def test_a_job_with_a_recent_event_is_kept_even_if_it_began_long_ago():
    job_id = job("failed", 30)
    sql("INSERT INTO procrastinate_events (job_id, type) VALUES (%s, 'retried')", [job_id])

    assert retention.delete_finished_jobs() == 0
    assert job_ids() == {job_id}


def test_the_shipped_schedule_runs_the_deletion_once_an_hour():
    [periodic] = [
        task
        for task in app.periodic_registry.periodic_tasks.values()
        if task.task.name == retention.TASK_NAME
    ]
    start = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC).timestamp()
    ticks = [start]
    iterator = periodic.croniter
    iterator.set_current(start_time=start)
    for _ in range(4):
        ticks.append(iterator.get_next(ret_type=float))

    gaps = {b - a for a, b in zip(ticks[1:], ticks[2:], strict=False)}
    assert gaps == {3600.0}


def test_a_real_worker_runs_the_deletion(start_worker):
    old, recent = job("succeeded", 8), job("succeeded", 1)
    start_worker()

    tick = queue.defer(
        queue.JobSpec(retention.TASK_NAME, retention.QUEUE),
        timestamp=int(timezone.now().timestamp()),
    )

    wait_for(lambda: old not in job_ids(), timeout=60)
    assert {recent, tick} <= job_ids()
