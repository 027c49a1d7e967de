"""The demo server's mutable state: rate-limit budgets, misbehaviour switches, request log.

Request handler threads read and change it concurrently, so every access goes through one lock.
Tests flip the switches in-process (methods on ``DemoGitHubServer``) or over HTTP
(``POST /_demo/control``); both end up here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

RATE_LIMIT = 5000  # GitHub's hourly budget per token, for REST requests and GraphQL points alike
RESET_SECONDS = 3600


@dataclass
class Budget:
    limit: int = RATE_LIMIT
    used: int = 0
    reset: int = 0  # epoch seconds

    def refresh(self, now: float) -> None:
        # A new window starts when the old one has passed, as on GitHub.
        if now >= self.reset:
            self.used = 0
            self.reset = int(now) + RESET_SECONDS

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


@dataclass
class LoggedRequest:
    method: str
    path: str
    status: int
    resource: str  # "core", "graphql" or "demo"
    graphql_cost: int = 0
    graphql_first: int = 0  # page size: the outermost connection's ``first``/``last``
    at: float = field(default_factory=time.time)


@dataclass
class Faults:
    """What the next requests should suffer; see ``DemoGitHubServer`` for each switch."""

    secondary_limit_count: int = 0
    secondary_limit_status: int = 403
    retry_after: int = 1
    bad_gateway_count: int = 0
    latency: float = 0.0
    large_page_limit: int = 0  # 0: off; else GraphQL ``first`` above it times out
    large_page_status: int = 502
    unauthorized: bool = False
    missing_repos: set[str] = field(default_factory=set)  # lower-case "owner/name"


class ServerState:
    def __init__(self, tokens: set[str]) -> None:
        self.tokens = set(tokens)
        self.lock = threading.Lock()
        self.faults = Faults()
        self.budgets: dict[tuple[str, str], Budget] = {}
        self.log: list[LoggedRequest] = []
        self._request_counter = 0

    # Budgets -------------------------------------------------------------------------------

    def budget(self, token: str, resource: str) -> Budget:
        """The token's budget for ``resource``, refreshed; call with ``lock`` held."""
        budget = self.budgets.setdefault((token, resource), Budget())
        budget.refresh(time.time())
        return budget

    def spend(self, token: str, resource: str, points: int) -> Budget:
        with self.lock:
            budget = self.budget(token, resource)
            budget.used += points
            return Budget(budget.limit, budget.used, budget.reset)

    def peek(self, token: str, resource: str) -> Budget:
        with self.lock:
            budget = self.budget(token, resource)
            return Budget(budget.limit, budget.used, budget.reset)

    def set_remaining(self, remaining: int, reset_in: float, resources: tuple[str, ...]) -> None:
        """Make every known token (and any new one) have ``remaining`` left until the reset."""
        with self.lock:
            reset = int(time.time() + reset_in)
            for token in self.tokens:
                for resource in resources:
                    budget = self.budget(token, resource)
                    budget.used = budget.limit - remaining
                    budget.reset = reset

    # Faults --------------------------------------------------------------------------------

    def take_fault(self) -> tuple[str, int] | None:
        """Consume one counted fault, if any: ("secondary" or "bad_gateway", HTTP status)."""
        with self.lock:
            if self.faults.secondary_limit_count > 0:
                self.faults.secondary_limit_count -= 1
                return "secondary", self.faults.secondary_limit_status
            if self.faults.bad_gateway_count > 0:
                self.faults.bad_gateway_count -= 1
                return "bad_gateway", 502
        return None

    def configure(self, **changes: Any) -> None:
        with self.lock:
            for name, value in changes.items():
                if not hasattr(self.faults, name):
                    raise ValueError(f"unknown fault setting {name!r}")
                setattr(self.faults, name, value)

    def reset(self) -> None:
        with self.lock:
            self.faults = Faults()
            self.budgets.clear()

    # Log -----------------------------------------------------------------------------------

    def next_request_id(self) -> str:
        with self.lock:
            self._request_counter += 1
            n = self._request_counter
        # Shaped like GitHub's x-github-request-id (five hex groups).
        middle = f"{n * 7919 % 0xFFFFFF:06X}:{n * 104729 % 0xFFFFFFF:07X}"
        return f"DE40:{n:04X}:{middle}:{int(time.time()):08X}"

    def record(self, entry: LoggedRequest) -> None:
        with self.lock:
            self.log.append(entry)

    def snapshot_log(self) -> list[LoggedRequest]:
        with self.lock:
            return list(self.log)

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def log_as_json(self) -> list[dict[str, Any]]:
        return [asdict(entry) for entry in self.snapshot_log()]
