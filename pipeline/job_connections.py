"""The database connection a worker's job thread takes into a job: kept across jobs, and checked
without a round trip.

procrastinate runs sync tasks on a pool of threads that live as long as the worker, and the
worker keeps each thread's Django connection across jobs (``WORKER_CONN_MAX_AGE``) instead of
opening one per job. A kept connection may have died while the thread was idle: the database
restarted, an operator ran ``pg_terminate_backend``, an idle timeout. Django's health check
(``CONN_HEALTH_CHECKS``) finds that out with a ``SELECT 1`` before the first query of each
job. At hundreds of jobs a second that round trip was one in three of a stage job's statements
on Django's connection, about 3% of the workers' Python time and a statement's worth of
database CPU per job (bench/engine, issue 9).

A connection the server has closed says so on its socket: PostgreSQL sends a FATAL error and
closes it, and the kernel closes it when the server process dies. Between jobs a healthy
connection has nothing to read (Django's connections never LISTEN, and every query's reply was
read in full). So ``before_job`` looks at the socket without waiting. Anything readable, a
hang-up or an error means the connection is closed, and the job's first query opens a new one;
nothing means Django's check is done for this job. A rare harmless message (a parameter change
the server reports after a configuration reload) also reads as "closed", and costs one
reconnect.

What neither check can see in time is a peer that vanished without a word (a network
partition): ``SELECT 1`` would block until TCP gives up, and so does the job's first query,
which then fails the attempt like any database error (it is retried).
"""

from __future__ import annotations

import select

from django.db import close_old_connections, connections


def before_job() -> None:
    """Drop connections that are too old, broke in the last job, or were closed by the server;
    mark the rest checked, so the job's first query needs no ``SELECT 1`` first."""
    close_old_connections()
    for wrapper in connections.all(initialized_only=True):
        if wrapper.connection is None or not wrapper.health_check_enabled:
            continue
        if wrapper.in_atomic_block:
            continue  # not between jobs: leave it to Django
        if server_closed(wrapper.connection):
            wrapper.close()
        else:
            # Django's own flag for "checked since the last close_old_connections()".
            wrapper.health_check_done = True


def server_closed(raw_connection) -> bool:
    """Whether a psycopg connection, idle between queries, was closed by the server (or
    cannot be told apart from one that was): see the module docstring."""
    if raw_connection.closed or raw_connection.broken:
        return True
    try:
        descriptor = raw_connection.fileno()
    except Exception:  # psycopg raises once the connection is unusable
        return True
    poller = select.poll()
    poller.register(descriptor, select.POLLIN | select.POLLPRI)
    # POLLHUP and POLLERR are always reported; a zero timeout never waits.
    return bool(poller.poll(0))
