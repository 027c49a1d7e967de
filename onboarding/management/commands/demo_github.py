"""``manage.py demo_github``: run the bundled demo GitHub in the foreground."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from onboarding.demo_github.dataset import DEFAULT_PR_COUNT, build_dataset
from onboarding.demo_github.server import DEFAULT_TOKEN, DemoGitHubServer


class Command(BaseCommand):
    help = "Serve the demo GitHub organisation (REST under /api/v3, GraphQL at /api/graphql)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--token", default=DEFAULT_TOKEN, help="the token clients must send")
        parser.add_argument("--prs", type=int, default=None, help="number of PRs to generate")
        parser.add_argument(
            "--extra-repositories",
            type=int,
            default=int(os.environ.get("DEMO_GITHUB_EXTRA_REPOSITORIES", "0")),
            help="more organisation repositories without PRs (a large organisation for the "
            "picker; DEMO_GITHUB_EXTRA_REPOSITORIES)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dataset = None
        if options["extra_repositories"]:
            dataset = build_dataset(
                pr_count=options["prs"] or DEFAULT_PR_COUNT,
                extra_repositories=options["extra_repositories"],
            )
        extra = {"pr_count": options["prs"]} if options["prs"] else {}
        server = DemoGitHubServer(
            options["host"], options["port"], tokens=(options["token"],), dataset=dataset, **extra
        )
        stopped = threading.Event()

        def stop(signum: int, frame: object) -> None:
            stopped.set()

        # SIGTERM (from the run command or a process manager) stops it like Ctrl-C does.
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        server.start()
        dataset = server.dataset
        self.stdout.write(
            f"Demo GitHub serving {dataset.org.login}: {len(dataset.repositories)} repositories, "
            f"{len(dataset.pull_requests)} pull requests\n"
            f"GITHUB_API_URL={server.api_url}\n"
            f"GraphQL: {server.graphql_url}\n"
            f"Token: {options['token']}\n"
            "Press Ctrl-C to stop.",
        )
        self.stdout.flush()
        try:
            stopped.wait()
        finally:
            server.stop()
            self.stdout.write("Demo GitHub stopped.")
