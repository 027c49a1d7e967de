"""Scratch databases for the benchmarks in bench/ (shared by sync.py, llm.py, metrics.py, live.py).

A benchmark writes its synthetic data into a database of its own on the same PostgreSQL server
as the product's database (the embedded one, or the server of DATABASE_URL), so it never touches
real data and always starts from an empty schema. The scripts run as ``python bench/<name>.py``,
so bench/ is sys.path[0] and they import this module as ``scratch``.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import sys
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BASE_DIR = Path(__file__).resolve().parent.parent

# Server URL (admin database) of every scratch database this process created, so the drop goes
# to the same server even after DATABASE_URL has been pointed at the scratch database itself.
_admin_urls: dict[str, str] = {}


def _server_url() -> str:
    """The product's database URL, starting the embedded server if DATABASE_URL is unset."""
    # The settings package lives at the repository root, which is not on sys.path when a script
    # in bench/ runs; the benchmarks rely on it being there afterwards (django.setup()).
    if str(BASE_DIR) not in sys.path:
        sys.path.insert(0, str(BASE_DIR))
    from settings import embedded_postgres

    return embedded_postgres.database_url(BASE_DIR)


def _drop(conn: psycopg.Connection, name: str) -> None:
    # FORCE: a crashed earlier run (or a lingering client) may still hold connections to it.
    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_scratch_database(name: str) -> str:
    """Create ``name`` afresh (dropping any leftover of an earlier run) on the product's server;
    return a conninfo for it."""
    url = _server_url()
    # CREATE/DROP DATABASE cannot run inside the target database: go through "postgres".
    admin_url = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        _drop(conn, name)
        conn.execute(f'CREATE DATABASE "{name}"')
    _admin_urls[name] = admin_url
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo("", **params)


def drop_scratch_database(name: str) -> None:
    """Drop ``name`` from the server it was created on. Close Django's connections first."""
    admin_url = _admin_urls.pop(name, None) or make_conninfo(_server_url(), dbname="postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        _drop(conn, name)


def write_results(
    output: str | Path, benchmark: str, figures: dict, *, arguments: dict | None = None
) -> Path:
    """Write a benchmark's JSON (``bench/results/<name>.json`` or its --output): the benchmark's
    name, when it ran, the machine's CPU count and the arguments, then its own figures."""
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": benchmark,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
    }
    if arguments is not None:
        record["arguments"] = arguments
    record.update(figures)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"results written to {path}")
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def use_scratch_database(url: str, *, settings_module: str = "settings.base") -> None:
    """Point this process's Django settings (and its child processes') at the scratch database
    ``url``, in production mode, with throwaway secrets when none are given.

    Setting DATABASE_URL switches the settings out of the embedded/dev mode, where DEBUG is off
    and SECRET_KEY / TOKEN_ENCRYPTION_KEY must come from the environment: without these a
    benchmark on a fresh clone dies with "SECRET_KEY must be set when DJANGO_DEBUG is off".
    DEBUG stays off on purpose: with it on, Django keeps every SQL statement in memory."""
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-" + os.urandom(8).hex())
    os.environ.setdefault("TOKEN_ENCRYPTION_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
