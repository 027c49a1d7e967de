"""manage.py worker [--queues q1,q2] [--concurrency N]: the one way workers are launched.

One process runs, on one event loop:

- procrastinate's worker (the same ``Worker`` that ``manage.py procrastinate worker`` runs, on
  the same pool connector), with ``shutdown_graceful_timeout`` shorter than the stalled
  threshold. When it stops on its own (procrastinate stops its worker when a side task such as
  the LISTEN connection fails, e.g. after a database restart, and would exit with status 0) a
  new one is started in-process with backoff; only a signal ends the command.
- the liveness lock (``pipeline.liveness.LivenessLock``): a dedicated connection holding an
  advisory lock keyed by the worker's id, taken again whenever it drops;
- the rescue loop (``pipeline.rescue.rescue_stalled_jobs``) every
  PIPELINE_RESCUE_INTERVAL_SECONDS on a thread of its own, so it never waits behind stage jobs
  (neither in the queue nor for a thread of the pool the jobs use).

On SIGTERM/SIGINT the worker stops fetching; running stages hand back at their next page
(``pipeline.execution``) and the worker exits. A stage that reaches no page boundary within
the graceful timeout (plus a few seconds) is not waited for: the process exits hard, its
liveness lock goes with it, and another worker's rescuer supersedes the stage within seconds.
Everything a stage writes is transactional and idempotent, so that exit is as safe as a kill.

``--no-periodic``: this worker defers no periodic task (the nightly tick, rescore, retention);
any other worker still does, and procrastinate defers each tick once whichever worker sees it.
The tests' workers run with it, so a wall-clock schedule (procrastinate also defers a tick it
missed by up to ten minutes when a worker starts) never starts work in the middle of a test.

Database connections: job threads keep theirs across jobs (WORKER_CONN_MAX_AGE), instead of a
new connection per job; before each job, one the server closed is dropped, by a look at its
socket rather than Django's ``SELECT 1`` (``pipeline.job_connections``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from procrastinate import worker as procrastinate_worker
from procrastinate.contrib.django import app
from procrastinate.contrib.django.utils import connector_params

from pipeline import execution, liveness, rescue

logger = logging.getLogger("pipeline.worker")


class _Worker(procrastinate_worker.Worker):
    """procrastinate's worker; a stop request (ours or its own) also tells running stages to
    hand back at their next page."""

    def __init__(self, *, defer_periodic: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.defer_periodic = defer_periodic

    def stop(self) -> None:
        execution.STOPPING.set()
        super().stop()

    async def _periodic_deferrer(self) -> None:
        if self.defer_periodic:
            await super()._periodic_deferrer()
        else:
            # Park instead of returning: procrastinate's side-task monitor stops watching the
            # others (the LISTEN connection among them) once any side task ends.
            await asyncio.Event().wait()


def _rescue_once() -> dict[str, list[int]]:
    close_old_connections()
    return rescue.rescue_stalled_jobs()


class Command(BaseCommand):
    help = "Run a worker: procrastinate's worker plus a liveness lock and the rescue loop."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--queues", default="", help="comma-separated queues (default: all)")
        parser.add_argument(
            "--concurrency", type=int, default=settings.WORKER_CONCURRENCY, help="jobs at once"
        )
        parser.add_argument("--name", default="", help="worker name in logs")
        parser.add_argument(
            "--no-periodic",
            action="store_true",
            help="defer no periodic task (nightly, rescore, retention) from this worker",
        )

    def handle(
        self, *args, queues: str, concurrency: int, name: str, no_periodic: bool, **options
    ) -> None:
        # Reuse connections across jobs in this process only (the web side keeps its own
        # setting: its live streams close theirs).
        settings.DATABASES["default"]["CONN_MAX_AGE"] = settings.WORKER_CONN_MAX_AGE
        runner = _Runner(
            queues=[q.strip() for q in queues.split(",") if q.strip()] or None,
            concurrency=max(1, concurrency),
            name=name or None,
            defer_periodic=not no_periodic,
        )
        asyncio.run(runner.run())


class _Runner:
    def __init__(
        self,
        *,
        queues: list[str] | None,
        concurrency: int,
        name: str | None,
        defer_periodic: bool = True,
    ) -> None:
        self.queues = queues
        self.defer_periodic = defer_periodic
        self.concurrency = concurrency
        self.name = name
        self.worker: _Worker | None = None
        self.stop_requested = asyncio.Event()
        self.rescue_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rescue")

    def _on_signal(self, signum: int) -> None:
        if self.stop_requested.is_set():
            return
        logger.info("signal %s: stopping; running stages hand back", signum)
        self.stop_requested.set()
        if self.worker is not None:
            self.worker.stop()
        execution.STOPPING.set()
        deadline = settings.WORKER_SHUTDOWN_GRACEFUL_TIMEOUT + 5
        asyncio.get_running_loop().call_later(deadline, self._exit_hard)

    def _exit_hard(self) -> None:
        logger.warning("a stage did not hand back in time; exiting (it will be rescued)")
        logging.shutdown()
        os._exit(1)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Sync jobs run in the loop's default executor: give it a thread per job slot.
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=self.concurrency + 1, thread_name_prefix="job")
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        # From here on a SIGTERM is a clean stop (before it, during Django's start-up, the
        # default action kills the process: harmless, nothing has started). Launchers and tests
        # wait for this line.
        logger.info(
            "worker started (pid %d): queues %s, concurrency %d",
            os.getpid(),
            ",".join(self.queues) if self.queues else "all",
            self.concurrency,
        )
        lock = liveness.LivenessLock(
            lambda: self.worker.worker_id if self.worker is not None else None,
            connector_params(),
        )
        side = [
            asyncio.create_task(lock.run(), name="liveness"),
            asyncio.create_task(self._rescue_loop(), name="rescue"),
        ]
        try:
            with app.replace_connector(app.connector.get_worker_connector()):
                await self._run_workers()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            self.rescue_executor.shutdown(wait=False, cancel_futures=True)

    async def _run_workers(self) -> None:
        app.perform_import_paths()  # as app.run_worker_async does (PROCRASTINATE_IMPORT_PATHS)
        backoff = 0.5
        while not self.stop_requested.is_set():
            execution.STOPPING.clear()
            self.worker = _Worker(
                app=app,
                defer_periodic=self.defer_periodic,
                **{
                    **app.worker_defaults,
                    "queues": self.queues,
                    "concurrency": self.concurrency,
                    "name": self.name,
                    "shutdown_graceful_timeout": settings.WORKER_SHUTDOWN_GRACEFUL_TIMEOUT,
                    "install_signal_handlers": False,
                },
            )
            started = time.monotonic()
            try:
                async with app.open_async():
                    await self.worker.run()
            except Exception as exc:
                logger.warning("worker stopped with an error: %r", exc)
            if self.stop_requested.is_set():
                break
            if time.monotonic() - started > 30:
                backoff = 0.5
            logger.warning("procrastinate's worker stopped by itself; restart in %.1fs", backoff)
            try:
                await asyncio.wait_for(self.stop_requested.wait(), timeout=backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 10.0)

    async def _rescue_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                done = await loop.run_in_executor(self.rescue_executor, _rescue_once)
                if any(done.values()):
                    logger.info("rescue: %s", done)
            except Exception as exc:
                logger.warning("rescue pass failed: %r", exc)
            await asyncio.sleep(settings.PIPELINE_RESCUE_INTERVAL_SECONDS)
