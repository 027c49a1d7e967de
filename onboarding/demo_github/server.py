"""The bundled demo GitHub: an HTTP server laid out like GitHub Enterprise.

REST lives under ``/api/v3`` and GraphQL at ``POST /api/graphql``, so PyGithub pointed at
``base_url="http://HOST:PORT/api/v3"`` finds both by itself (it derives the GraphQL URL by
dropping ``/v3``). Tokens, rate-limit budgets and headers behave like GitHub's; the switches in
``DemoGitHubServer`` make it misbehave the ways GitHub does (rate limits, 502s, slowness,
revoked tokens, vanished repositories), in-process or via ``POST /_demo/control``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from onboarding.demo_github import rest
from onboarding.demo_github.controls import LoggedRequest, ServerState
from onboarding.demo_github.dataset import (
    DEFAULT_DAYS,
    DEFAULT_PR_COUNT,
    DEFAULT_SEED,
    Dataset,
    get_dataset,
)
from onboarding.demo_github.graphql_api import QueryContext, parse_query, run_query
from onboarding.demo_github.schema import load_schema

logger = logging.getLogger(__name__)

DEFAULT_TOKEN = "demo-token"
SCOPES = "read:org, repo, user"
BAD_GATEWAY_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Unicorn! &middot; GitHub</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>We had issues producing the response to your request. "
    "Sorry about that. Please try resubmitting your request and contact us if the problem "
    "persists.</p></body></html>\n"
)
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID {request_id}."
)
TIMEOUT_MESSAGE = (
    "Something went wrong while executing your query. This may be the result of a timeout, or "
    "it could be a GitHub bug. Please include `{request_id}` when reporting this issue."
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as PyGithub's requests session expects
    server: _HttpServer
    server_version = "GitHub.com"

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log replaces stderr noise; tokens never reach either

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _dispatch(self, method: str) -> None:
        demo: DemoGitHubServer = self.server.demo
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request_id = demo.state.next_request_id()
        # Logged when the answer is sent (see _send_raw), so a client that has its answer can
        # already read the entry.
        self._entry = entry = LoggedRequest(method, parts.path, 0, "core")
        if parts.path.startswith("/_demo/"):
            entry.resource = "demo"
            status, payload, headers = demo.handle_control(method, parts.path, body)
            self._send(status, payload, headers, request_id)
            return
        try:
            self._handle_api(method, parts.path, parts.query, body, request_id, entry)
        except Exception:
            # A bug here must look like GitHub's own 500 to the client, not a dropped connection.
            logger.exception("demo GitHub failed on %s %s", method, parts.path)
            self._send(500, _message("Server Error", 500), {}, request_id)

    def _handle_api(
        self, method: str, path: str, query: str, body: bytes, request_id: str, entry: LoggedRequest
    ) -> int:
        demo: DemoGitHubServer = self.server.demo
        faults = demo.state.faults
        if faults.latency:
            time.sleep(faults.latency)
        is_graphql = path == "/api/graphql"
        entry.resource = "graphql" if is_graphql else "core"
        if not (is_graphql or path.startswith("/api/v3/") or path == "/api/v3"):
            return self._send(
                404, {"message": "Not Found", "documentation_url": rest.DOCS}, {}, request_id
            )

        token = _token(self.headers.get("Authorization", ""))
        if token is None:
            return self._send(401, _message("Requires authentication", 401), {}, request_id)
        if faults.unauthorized or token not in demo.state.tokens:
            return self._send(401, _message("Bad credentials", 401), {}, request_id)

        fault = demo.state.take_fault()
        if fault and fault[0] == "secondary":
            headers = {"Retry-After": str(faults.retry_after)}
            headers |= self._rate_headers(token, entry.resource)
            message = SECONDARY_MESSAGE.format(request_id=request_id)
            return self._send(fault[1], _message(message, fault[1]), headers, request_id)
        if fault:
            return self._send_raw(
                502, BAD_GATEWAY_HTML.encode(), "text/html; charset=utf-8", {}, request_id
            )

        if is_graphql:
            if method != "POST":
                return self._send(404, _message("Not Found", 404), {}, request_id)
            return self._graphql(token, body, request_id, entry)
        if method not in ("GET", "HEAD"):
            return self._send(404, _message("Not Found", 404), {}, request_id)
        return self._rest(token, path.removeprefix("/api/v3"), query, request_id)

    def _rest(self, token: str, path: str, query: str, request_id: str) -> int:
        demo: DemoGitHubServer = self.server.demo
        if path == "/rate_limit":
            # Free on GitHub: asking about the budget does not spend it.
            return self._send(
                200, self._rate_limit_json(token), self._rate_headers(token, "core"), request_id
            )
        budget = demo.state.peek(token, "core")
        if budget.remaining <= 0:
            message = (
                f"API rate limit exceeded for user ID {demo.dataset.viewer.database_id}. If you "
                "reach out to GitHub Support for help, please include the request ID "
                f"{request_id} and timestamp {datetime.now().isoformat(timespec='seconds')}."
            )
            headers = self._rate_headers(token, "core")
            return self._send(403, _message(message, 403), headers, request_id)
        try:
            payload, headers = rest.handle_get(
                demo.dataset,
                path or "/",
                dict(parse_qsl(query)),
                api=demo.api_url_for(self.headers.get("Host")),
                web=demo.web_url_for(self.headers.get("Host")),
                missing=demo.state.faults.missing_repos,
            )
        except rest.RestError as exc:
            demo.state.spend(token, "core", 1)
            return self._send(exc.status, exc.body, self._rate_headers(token, "core"), request_id)
        encoded = json.dumps(payload).encode()
        etag = f'W/"{hashlib.sha256(encoded).hexdigest()[:40]}"'
        if self.headers.get("If-None-Match") == etag:
            # Conditional requests answered 304 are free on GitHub.
            headers = {"ETag": etag} | self._rate_headers(token, "core")
            return self._send_raw(304, b"", None, headers, request_id)
        demo.state.spend(token, "core", 1)
        headers |= {"ETag": etag, "Cache-Control": "private, max-age=60, s-maxage=60"}
        headers |= self._rate_headers(token, "core")
        return self._send_raw(200, encoded, "application/json; charset=utf-8", headers, request_id)

    def _graphql(self, token: str, body: bytes, request_id: str, entry: LoggedRequest) -> int:
        demo: DemoGitHubServer = self.server.demo
        try:
            request = json.loads(body or b"{}")
            query, variables = request["query"], request.get("variables") or {}
        except (ValueError, KeyError, TypeError):
            message = "Problems parsing JSON"
            return self._send(400, _message(message, 400), {}, request_id)
        parsed = parse_query(query, variables)
        entry.graphql_cost, entry.graphql_first = parsed.cost, parsed.largest_first
        if parsed.errors:
            return self._send(
                200, {"errors": parsed.errors}, self._rate_headers(token, "graphql"), request_id
            )
        faults = demo.state.faults
        if faults.large_page_limit and parsed.largest_first > faults.large_page_limit:
            payload = {
                "data": None,
                "errors": [{"message": TIMEOUT_MESSAGE.format(request_id=request_id)}],
            }
            return self._send(faults.large_page_status, payload, {}, request_id)
        budget = demo.state.peek(token, "graphql")
        if budget.remaining < parsed.cost:
            message = (
                f"API rate limit already exceeded for user ID {demo.dataset.viewer.database_id}."
            )
            payload = {
                "errors": [
                    {"type": "RATE_LIMITED", "code": "graphql_rate_limit", "message": message}
                ]
            }
            return self._send(200, payload, self._rate_headers(token, "graphql"), request_id)
        budget = demo.state.spend(token, "graphql", parsed.cost)
        host = self.headers.get("Host")
        context = QueryContext(
            dataset=demo.dataset,
            web_url=demo.web_url_for(host),
            cost=parsed.cost,
            remaining=budget.remaining,
            reset_at=budget.reset,
            limit=budget.limit,
            used=budget.used,
            missing=faults.missing_repos,
        )
        payload = run_query(parsed, variables, context)
        return self._send(200, payload, self._rate_headers(token, "graphql"), request_id)

    def _rate_limit_json(self, token: str) -> dict[str, Any]:
        resources = {}
        for resource in ("core", "graphql"):
            budget = self.server.demo.state.peek(token, resource)
            resources[resource] = {
                "limit": budget.limit,
                "used": budget.used,
                "remaining": budget.remaining,
                "reset": budget.reset,
            }
        reset = int(time.time()) + 60
        resources["search"] = {"limit": 30, "used": 0, "remaining": 30, "reset": reset}
        return {"resources": resources, "rate": resources["core"]}

    def _rate_headers(self, token: str, resource: str) -> dict[str, str]:
        budget = self.server.demo.state.peek(token, resource)
        return {
            "X-RateLimit-Limit": str(budget.limit),
            "X-RateLimit-Remaining": str(budget.remaining),
            "X-RateLimit-Reset": str(budget.reset),
            "X-RateLimit-Used": str(budget.used),
            "X-RateLimit-Resource": resource,
        }

    def _send(self, status: int, payload: Any, headers: dict[str, str], request_id: str) -> int:
        encoded = json.dumps(payload).encode()
        return self._send_raw(
            status, encoded, "application/json; charset=utf-8", headers, request_id
        )

    def _send_raw(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        headers: dict[str, str],
        request_id: str,
    ) -> int:
        self._entry.status = status
        if self._entry.resource != "demo":
            self.server.demo.state.record(self._entry)
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-GitHub-Request-Id", request_id)
        self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
        self.send_header("X-OAuth-Scopes", SCOPES)
        self.send_header("X-Accepted-OAuth-Scopes", "repo")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status


def _token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


def _message(message: str, status: int) -> dict[str, str]:
    return {"message": message, "documentation_url": rest.DOCS, "status": str(status)}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    demo: DemoGitHubServer


class DemoGitHubServer:
    """The demo GitHub on ``host:port`` (port 0 picks a free one).

    ``start()`` serves from a background thread, ``serve_forever()`` in the foreground; ``stop()``
    closes the socket. The misbehaviour switches below change what the next requests get.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: set[str] | tuple[str, ...] = (DEFAULT_TOKEN,),
        dataset: Dataset | None = None,
        now: datetime | None = None,
        seed: int = DEFAULT_SEED,
        pr_count: int = DEFAULT_PR_COUNT,
        days: int = DEFAULT_DAYS,
    ) -> None:
        self.dataset = dataset or get_dataset(now, seed, pr_count, days)
        self.state = ServerState(set(tokens))
        self.token = next(iter(tokens))
        self._http = _HttpServer((host, port), _Handler)
        self._http.demo = self
        self.host, self.port = self._http.server_address[:2]
        self._thread: threading.Thread | None = None

    # Addresses ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What ``GITHUB_API_URL`` / PyGithub's ``base_url`` should be."""
        return f"{self.base_url}/api/v3"

    @property
    def graphql_url(self) -> str:
        return f"{self.base_url}/api/graphql"

    def web_url_for(self, host_header: str | None) -> str:
        return f"http://{host_header}" if host_header else self.base_url

    def api_url_for(self, host_header: str | None) -> str:
        return f"{self.web_url_for(host_header)}/api/v3"

    # Life cycle ----------------------------------------------------------------------------

    def start(self) -> DemoGitHubServer:
        load_schema()  # about a second, once per process: pay it before the first query
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="demo-github", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        load_schema()
        self._http.serve_forever()

    def stop(self) -> None:
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._http.server_close()

    def __enter__(self) -> DemoGitHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Misbehaviour switches -----------------------------------------------------------------

    def rate_limited(self, remaining: int = 0, reset_in: float = 60, resource: str = "all") -> None:
        """Spend the primary budget down to ``remaining`` until ``reset_in`` seconds from now."""
        resources = ("core", "graphql") if resource == "all" else (resource,)
        self.state.set_remaining(remaining, reset_in, resources)

    def secondary_limit(self, count: int = 1, status: int = 403, retry_after: int = 1) -> None:
        """The next ``count`` API requests get a secondary rate limit with ``Retry-After``."""
        self.state.configure(
            secondary_limit_count=count, secondary_limit_status=status, retry_after=retry_after
        )

    def bad_gateway(self, count: int = 1) -> None:
        """The next ``count`` API requests get GitHub's HTML 502 page."""
        self.state.configure(bad_gateway_count=count)

    def slow(self, seconds: float) -> None:
        """Add ``seconds`` of latency to every API request (0 turns it off)."""
        self.state.configure(latency=seconds)

    def timeout_on_large_pages(self, max_first: int = 50, status: int = 502) -> None:
        """GraphQL queries whose page (outermost ``first``/``last``) exceeds ``max_first`` time
        out with ``status`` (0: off), as big GitHub queries do; nested sizes do not count."""
        self.state.configure(large_page_limit=max_first, large_page_status=status)

    def unauthorized(self, enabled: bool = True) -> None:
        """Every API request answers 401 Bad credentials, as for a revoked token."""
        self.state.configure(unauthorized=enabled)

    def missing_repo(self, name: str) -> None:
        """The repository (``name`` or ``owner/name``) vanishes: 404 / GraphQL NOT_FOUND."""
        full_name = name if "/" in name else f"{self.dataset.org.login}/{name}"
        with self.state.lock:
            self.state.faults.missing_repos.add(full_name.lower())

    def reset(self) -> None:
        """Back to a well-behaved server with fresh budgets (the request log is kept)."""
        self.state.reset()

    # Request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        return self.state.snapshot_log()

    def clear_requests(self) -> None:
        self.state.clear_log()

    # Control over HTTP ---------------------------------------------------------------------

    def handle_control(
        self, method: str, path: str, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """``POST /_demo/control {"mode": ..., args}``, ``GET /_demo/requests``."""
        if method == "GET" and path == "/_demo/requests":
            return 200, self.state.log_as_json(), {}
        if method != "POST" or path != "/_demo/control":
            return 404, {"message": "Not Found"}, {}
        try:
            command = json.loads(body or b"{}")
            mode = command.pop("mode")
            switch = CONTROL_MODES[mode]
            getattr(self, switch)(**command)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            modes = ", ".join(sorted(CONTROL_MODES))
            return 400, {"message": f"Bad control command ({exc!s}); modes: {modes}"}, {}
        return 200, {"ok": True, "mode": mode}, {}


CONTROL_MODES = {
    name: name
    for name in (
        "rate_limited",
        "secondary_limit",
        "bad_gateway",
        "slow",
        "timeout_on_large_pages",
        "unauthorized",
        "missing_repo",
        "reset",
    )
}
CONTROL_MODES["clear_requests"] = "clear_requests"
