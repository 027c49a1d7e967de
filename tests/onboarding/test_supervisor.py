"""manage.py run keeps every process up: a child that exits, whatever its status, is restarted
with backoff and the output says so; the others keep running. The Procfile is the one list of
process types, and its workers serve every queue the pipeline uses."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from onboarding.supervisor import Supervisor, read_procfile
from pipeline import queue
from tests.conftest import BASE_DIR, wait_for


def supervisor(messages: list[str], tmp_path: Path, **backoff) -> Supervisor:
    return Supervisor(messages.append, tmp_path, **backoff)


def test_a_child_that_exits_with_status_0_is_restarted_and_the_output_says_so(tmp_path):
    messages: list[str] = []
    sup = supervisor(messages, tmp_path, first_backoff=0.05)
    starts = tmp_path / "starts"
    child = sup.start("worker", f"sh -c 'echo x >> {starts}; exit 0'", dict(os.environ))
    try:

        def started_three_times() -> bool:
            sup.check()
            return starts.exists() and len(starts.read_text().split()) >= 3

        wait_for(started_three_times, timeout=30)
    finally:
        sup.stop()

    assert child.restarts >= 2
    assert child.exits[:2] == [0, 0]
    assert any("worker" in m and "exited with status 0" in m for m in messages), messages
    assert any("worker restarted" in m for m in messages), messages


def test_a_sigkilled_child_is_restarted_while_the_others_keep_running(tmp_path):
    messages: list[str] = []
    sup = supervisor(messages, tmp_path, first_backoff=0.05)
    web = sup.start("web", "sleep 120", dict(os.environ))
    worker = sup.start("worker", "sleep 120", dict(os.environ))
    web_pid, first_worker_pid = web.pid, worker.pid
    try:
        os.kill(first_worker_pid, signal.SIGKILL)
        wait_for(lambda: sup.check() or (worker.restarts == 1 and worker.running()), timeout=30)

        assert worker.pid != first_worker_pid
        assert web.running() and web.pid == web_pid and web.restarts == 0
        assert any("exited with signal SIGKILL" in m for m in messages), messages
    finally:
        sup.stop()
    assert not web.running() and not worker.running()


def test_the_backoff_doubles_while_a_child_keeps_dying_quickly(tmp_path):
    messages: list[str] = []
    sup = supervisor(messages, tmp_path, first_backoff=0.05, max_backoff=0.2)
    child = sup.start("demo_github", "false", dict(os.environ))
    try:
        wait_for(lambda: sup.check() or child.restarts >= 4, timeout=30)
    finally:
        sup.stop()

    waits = [m.rsplit("restarting in ", 1)[1] for m in messages if "restarting in" in m]
    assert waits[:4] == ["0.05 s", "0.1 s", "0.2 s", "0.2 s"]
    assert child.exits[:4] == [1, 1, 1, 1]


def expanded(command: str, env: dict[str, str]) -> list[str]:
    """The command as ``sh`` expands it (what a process manager would run)."""
    out = subprocess.run(
        ["/bin/sh", "-c", f"printf '%s\\n' {command}"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def worker_queues(command: str, env: dict[str, str]) -> set[str]:
    words = expanded(command, env)
    return set(words[words.index("--queues") + 1].split(","))


def test_the_procfile_workers_serve_every_pipeline_queue_with_syncs_apart():
    types = {t.name: t.command for t in read_procfile(BASE_DIR / "Procfile")}
    assert {"release", "web", "worker_sync", "worker"} <= set(types)
    assert "settings.asgi:application" in types["web"]  # ASGI: the live stream needs it

    used = {spec.queue for spec in queue.STAGE_JOBS.values()}
    used |= {queue.EMAIL_JOB.queue}
    served = {
        name: worker_queues(command, {})
        for name, command in types.items()
        if "worker" in expanded(command, {})
    }
    assert set().union(*served.values()) >= used
    assert served["worker_sync"] == {"sync"}
    assert "sync" not in served["worker"]


def test_the_procfile_reads_queues_and_concurrency_from_the_environment():
    types = {t.name: t.command for t in read_procfile(BASE_DIR / "Procfile")}
    env = {"WORKER_QUEUES": "llm", "WORKER_CONCURRENCY": "9"}

    words = expanded(types["worker"], env)

    assert worker_queues(types["worker"], env) == {"llm"}
    assert words[words.index("--concurrency") + 1] == "9"
