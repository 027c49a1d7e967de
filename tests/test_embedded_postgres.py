"""The embedded PostgreSQL: shared by processes, data kept across restarts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def run_python(code: str, pgdata: Path) -> str:
    """Run ``code`` in a fresh interpreter (its own process, like web/worker/tests are)."""
    script = textwrap.dedent(
        f"""
        import psycopg
        from pathlib import Path
        from settings import embedded_postgres
        url = embedded_postgres.start(Path({str(pgdata)!r}))
        """
    ) + textwrap.dedent(code)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_data_survives_a_restart_of_the_embedded_server(tmp_path):
    pgdata = tmp_path / "postgres"
    run_python(
        """
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (value text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
        """,
        pgdata,
    )
    # The last process using the server has exited, so the server stopped with it.
    assert not (pgdata / "postmaster.pid").exists()

    out = run_python(
        """
        with psycopg.connect(url) as conn:
            print(conn.execute("SELECT value FROM kept").fetchone()[0])
        """,
        pgdata,
    )
    assert out == "still here"


def test_a_killed_process_does_not_keep_the_server_alive_forever(tmp_path):
    pgdata = tmp_path / "postgres"
    run_python("", pgdata)
    # A process killed with SIGKILL never unregisters its pid.
    (pgdata / ".handle_pids.json").write_text(json.dumps([2**22 + 12345]))

    run_python("", pgdata)

    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    assert not (pgdata / "postmaster.pid").exists()
