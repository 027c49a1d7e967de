"""Keeping the product's processes up on one machine (``manage.py run``).

The process types are written once, in the ``Procfile`` at the repository root: the same lines a
production process manager (Heroku, foreman/honcho, systemd units generated from it) runs. Each
line is run as ``sh -c "exec <command>"``, so ``${VAR:-default}`` expands exactly as it would
there, and ``python`` is the interpreter running ``manage.py run`` (its folder is put first on
PATH).

Why restart whatever the exit status: procrastinate's worker can stop by itself with status 0
after a PostgreSQL restart ("Side task listener failed ... stopping worker"), and a SIGKILLed or
OOM-killed worker must not take the web server down with it. A child that exits is started again
after a backoff (1 s, doubling up to 30 s while it keeps dying quickly; back to 1 s once it has
stayed up for 30 s), and every exit and restart is written to the output. Only Ctrl-C or SIGTERM
to ``manage.py run`` stops the children.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
# A child that stayed up this long is healthy again: its next crash restarts it after 1 s.
STABLE_AFTER_SECONDS = 30.0

_PROCFILE_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>.+)$")


@dataclass(frozen=True)
class ProcessType:
    name: str
    command: str


def read_procfile(path: Path) -> list[ProcessType]:
    """The process types of a Procfile, in file order (comments and blank lines skipped)."""
    types = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PROCFILE_LINE.match(line)
        if match is None:
            raise ValueError(f"{path}:{number}: not a 'name: command' line: {raw!r}")
        types.append(ProcessType(match["name"], match["command"].strip()))
    return types


def child_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's folder first on PATH, so Procfile's ``python`` is ours."""
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])}


@dataclass
class Child:
    name: str
    command: str
    env: dict[str, str]
    cwd: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = FIRST_BACKOFF_SECONDS
    restarts: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {self.command}"], env=self.env, cwd=self.cwd
        )
        self.started_at = time.monotonic()
        self.restart_at = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    """Starts children and restarts any that exits, with backoff, until ``stop()``."""

    def __init__(
        self,
        say: Callable[[str], None],
        cwd: Path,
        *,
        first_backoff: float = FIRST_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.say = say
        self.cwd = cwd
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.children: list[Child] = []
        self.stopping = False

    def start(self, name: str, command: str, env: dict[str, str]) -> Child:
        child = Child(
            name=name,
            command=command,
            env=child_env(env),
            cwd=self.cwd,
            backoff=self.first_backoff,
        )
        child.start()
        self.children.append(child)
        self.say(f"{name} started (pid {child.pid}): {command}")
        return child

    def check(self) -> None:
        """Notice exits and restart children whose backoff has passed; call it often."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping:
                return
            if child.restart_at is None and child.process is not None:
                status = child.process.poll()
                if status is None:
                    continue
                uptime = now - child.started_at
                if uptime >= STABLE_AFTER_SECONDS:
                    child.backoff = self.first_backoff
                child.exits.append(status)
                child.restart_at = now + child.backoff
                self.say(
                    f"{child.name} (pid {child.pid}) exited with {_describe(status)} after"
                    f" {uptime:.0f} s; restarting in {child.backoff:g} s"
                )
                child.backoff = min(child.backoff * 2, self.max_backoff)
            if child.restart_at is not None and now >= child.restart_at:
                child.start()
                child.restarts += 1
                self.say(f"{child.name} restarted (pid {child.pid}, restart {child.restarts})")

    def stop(self, timeout: float = 25) -> None:
        """SIGTERM every child (last started first), then SIGKILL what is left at ``timeout``."""
        self.stopping = True
        for child in reversed(self.children):
            if child.running():
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"
