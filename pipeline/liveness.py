"""Is the worker running a job alive? The one rule, used by the rescuer, ``pipeline check``, the
admin and the progress page (through ``pipeline.rescue``).

Why not the heartbeat alone: procrastinate's heartbeat can only say "dead" after a timeout
(PIPELINE_STALLED_AFTER_SECONDS, 30 s), far from "a killed worker's stage runs again within
5 s". PostgreSQL gives a faster signal: a process's connections close when it dies (SIGKILL
included), and a session-level advisory lock held on such a connection disappears with it.

So every ``manage.py worker`` process keeps one dedicated connection (``LivenessLock``) holding
``pg_advisory_lock(LOCK_NAMESPACE, <procrastinate worker id>)``, named
``tformance-worker-liveness:<id>`` in ``pg_stat_activity``, and records in ``WorkerLiveness``
when it took it. A ``doing`` job's worker is dead when

1. its worker row is gone (procrastinate prunes rows of workers silent for 30 s and deletes its
   own row on a clean exit), or
2. its heartbeat is older than PIPELINE_STALLED_AFTER_SECONDS (the fallback for a worker that
   hangs with its connections open, or a host that vanished without closing TCP), or
3. its liveness lock is not held, a rescuer first saw it missing more than
   PIPELINE_LIVENESS_GRACE_SECONDS ago, and the worker took it after the server last started.

The grace lets a worker whose connection was ``pg_terminate_backend``-ed (an operator, a
pooler, a failover) take its lock again before anyone calls it dead: the lock connection waits
on its socket, so it notices at once and reconnects in milliseconds. The server-start
comparison covers a PostgreSQL restart, which drops every lock of every live worker at once:
until a worker has taken its lock on the new server, only rules 1 and 2 apply to it. A worker
that never took a lock (an old ``manage.py procrastinate worker``) is judged by 1 and 2 only.
A CPU-bound stage does not matter here: the server holds the lock for as long as the
connection is open, whatever the process is doing.

``WorkerLiveness.lock_missing_since`` is written by the rescue loop (``mark_missing_locks``),
so the grace is measured by whichever rescuer saw the loss first; read-only callers (``pipeline
check``, the admin) apply the same rule to what the rescuers recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

# First key of the two-int advisory lock ("tf"); the second is the procrastinate worker id.
LOCK_NAMESPACE = 0x7466
APPLICATION_NAME_PREFIX = "tformance-worker-liveness:"

_LOCK_HELD = """
    EXISTS (SELECT 1 FROM pg_locks lk
             WHERE lk.locktype = 'advisory' AND lk.granted AND lk.objsubid = 2
               AND lk.database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND lk.classid = %(namespace)s AND lk.objid::bigint = {worker_id})
"""

# Why the worker of ``job`` is dead, or NULL while it is alive. Needs ``job`` joined with
# ``worker`` (procrastinate_workers) and ``live`` (pipeline_workerliveness), both LEFT JOINs.
DEAD_REASON_SQL = f"""
    CASE
        WHEN worker.id IS NULL THEN 'worker gone'
        WHEN worker.last_heartbeat < now() - make_interval(secs => %(stalled_after)s)
            THEN 'no heartbeat'
        WHEN live.lock_missing_since < now() - make_interval(secs => %(grace)s)
             AND live.lock_acquired_at > pg_postmaster_start_time()
             AND NOT {_LOCK_HELD.format(worker_id="job.worker_id")}
            THEN 'liveness lock lost'
    END
"""

JOB_JOINS = """
    LEFT JOIN procrastinate_workers worker ON worker.id = job.worker_id
    LEFT JOIN pipeline_workerliveness live ON live.worker_id = job.worker_id
"""


def rule_params(grace: float | None = None) -> dict[str, float]:
    return {
        "stalled_after": settings.PIPELINE_STALLED_AFTER_SECONDS,
        "grace": settings.PIPELINE_LIVENESS_GRACE_SECONDS if grace is None else grace,
        "namespace": LOCK_NAMESPACE,
    }


def dead_worker_jobs(
    *, job_id: int | None = None, lock: bool = False, grace: float | None = None
) -> list[dict]:
    """``doing`` jobs whose worker is dead: id, task_name, queue_name, attempts, worker_id,
    reason and age_seconds (since the job started). ``job_id`` narrows to one job; ``lock``
    takes its row lock (FOR UPDATE), so a re-check and what follows are atomic. ``grace``
    overrides PIPELINE_LIVENESS_GRACE_SECONDS (reports only, never for an action)."""
    where = "job.status = 'doing'"
    params: dict = rule_params(grace)
    if job_id is not None:
        where += " AND job.id = %(job_id)s"
        params["job_id"] = job_id
    query = f"""
        SELECT * FROM (
            SELECT job.id, job.task_name, job.queue_name, job.attempts, job.worker_id,
                   ({DEAD_REASON_SQL}) AS reason,
                   extract(epoch FROM now() - (
                       SELECT max(event.at) FROM procrastinate_events event
                        WHERE event.job_id = job.id AND event.type = 'started'))::float
                       AS age_seconds
              FROM procrastinate_jobs job {JOB_JOINS}
             WHERE {where}
             {"FOR UPDATE OF job" if lock else ""}
        ) jobs
        WHERE reason IS NOT NULL ORDER BY id
    """
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        columns = [c.name for c in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def mark_missing_locks() -> None:
    """Record when a rescuer first saw each worker's lock missing (and clear it once held
    again); forget workers whose procrastinate row is gone. One statement each, autocommit."""
    held = _LOCK_HELD.format(worker_id="live.worker_id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            UPDATE pipeline_workerliveness live
               SET lock_missing_since = CASE WHEN {held} THEN NULL ELSE now() END
             WHERE (live.lock_missing_since IS NULL) = (NOT {held})
            """,
            {"namespace": LOCK_NAMESPACE},
        )
        cursor.execute(
            "DELETE FROM pipeline_workerliveness live WHERE NOT EXISTS ("
            " SELECT 1 FROM procrastinate_workers worker WHERE worker.id = live.worker_id)"
        )


class LivenessLock:
    """Holds the liveness lock of the current procrastinate worker id of this process, on a
    dedicated autocommit connection, and takes it again (with backoff) whenever the connection
    drops or the worker id changes (the worker command restarts procrastinate's worker in
    process after it stops on its own, which registers a new id).

    The connection waits on its socket (``notifies``), so a terminated backend is noticed at
    once, not at the next probe."""

    def __init__(self, worker_id: Callable[[], int | None], conninfo: dict) -> None:
        self._worker_id = worker_id
        self._conninfo = conninfo
        self.held_for: int | None = None

    async def run(self) -> None:
        backoff = 0.05
        while True:
            worker_id = self._worker_id()
            if worker_id is None:
                await asyncio.sleep(0.02)
                continue
            try:
                await self._hold(worker_id)
                backoff = 0.05
            except (psycopg.Error, OSError) as exc:
                self.held_for = None
                logger.warning("liveness lock of worker %s lost (%s); retrying", worker_id, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _hold(self, worker_id: int) -> None:
        conninfo = {
            **self._conninfo,
            "application_name": f"{APPLICATION_NAME_PREFIX}{worker_id}",
            "autocommit": True,
        }
        async with await psycopg.AsyncConnection.connect(**conninfo) as conn:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s::int)", [LOCK_NAMESPACE, worker_id]
            )
            (locked,) = await cursor.fetchone()
            if not locked:  # our previous session is not gone yet on the server side
                raise psycopg.OperationalError("lock still held by an older session")
            await conn.execute(
                "INSERT INTO pipeline_workerliveness (worker_id, lock_acquired_at)"
                " VALUES (%s, now()) ON CONFLICT (worker_id) DO UPDATE"
                " SET lock_acquired_at = now(), lock_missing_since = NULL",
                [worker_id],
            )
            self.held_for = worker_id
            logger.info("worker %s holds its liveness lock", worker_id)
            while self._worker_id() == worker_id:
                async for _ in conn.notifies(timeout=1.0):
                    pass
                await conn.execute("SELECT 1")
            self.held_for = None
