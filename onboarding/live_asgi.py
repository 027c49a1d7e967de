"""The live progress stream, served at the ASGI layer in front of Django's request handling.

Why: through Django, every stream's request took the whole ASGI request path: the
``request_started`` signal's sync receivers on a thread of the request's own, nine middleware,
URL resolution, and ``StreamingHttpResponse`` re-wrapping every event on its way out. That cost
the web process about 6 ms of its one core (the GIL) per stream opened, so after a deploy
1,000 tabs reconnecting at once took 7-9 s to get their first snapshot (bench/live, issue 9).
Here a stream costs its authorisation, one snapshot shared by the team's streams, and one
``send`` per event.

What it keeps of Django's behaviour, using Django's own code for each:

- authentication: ``django.contrib.auth.get_user`` on the session the session cookie names
  (``SESSION_ENGINE``), so session expiry, the session-hash check after a password change and
  inactive users are handled as for any view;
- scoping: ``onboarding.http.team_id_of`` (``team_of``'s rule): only the viewer's own team,
  404 without one, 403 when not logged in; membership is re-checked while the stream is open
  (``live.event_stream``);
- the viewer's CSRF token for the Retry form: ``CsrfViewMiddleware`` reads the CSRF cookie and
  sets a new one when there is none, as on any page;
- the headers ``SecurityMiddleware`` and ``XFrameOptionsMiddleware`` add (their own
  ``process_response``).

The reads run on the listener's reader thread (``onboarding.listener``), as before: no database
connection per stream. Any other request, and this path with another method, goes to Django.
Django's own view for the path (``onboarding.live.progress_stream``) only refuses: it is reached
when Django is served without this front (WSGI, ``runserver``, the test client).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.middleware.security import SecurityMiddleware
from django.urls import get_script_prefix, reverse

from onboarding import live
from onboarding.http import team_id_of
from onboarding.listener import get_listener

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TEXT = "text/plain; charset=utf-8"
# Said when the authorisation could not be read (the database is away); EventSource retries.
UNAVAILABLE = "The live progress is unavailable for a moment; reconnecting."


@dataclass(frozen=True)
class StreamViewer:
    team_id: int
    user_id: int
    csrf_token: str


@dataclass(frozen=True)
class StreamAnswer:
    # The response's status and headers (and, for a refusal, its body), as Django's middleware
    # leaves them; ``viewer`` is None for a refusal.
    response: HttpResponse
    viewer: StreamViewer | None = None


def _unused_get_response(request: HttpRequest) -> HttpResponse:
    raise AssertionError("only the middleware's process_request/process_response are used")


def _with_page_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """The headers every page gets (nosniff, referrer policy, HSTS over HTTPS, frame options)."""
    for middleware in (SecurityMiddleware, XFrameOptionsMiddleware):
        response = middleware(_unused_get_response).process_response(request, response)
    return response


def authorize_stream(scope: Scope) -> StreamAnswer:
    """Who is asking, from the request's cookies, decided as Django's middleware and views
    decide it: 403 when not logged in, 404 without a team. Runs on the reader thread."""
    request = ASGIRequest(scope, io.BytesIO())
    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    request.user = auth.get_user(request)
    if not request.user.is_authenticated:
        refusal = HttpResponse(live.NOT_LOGGED_IN, status=403, content_type=_TEXT)
        return StreamAnswer(_with_page_headers(request, refusal))
    try:
        team_id = team_id_of(request)
    except Http404 as exc:
        refusal = HttpResponse(str(exc), status=404, content_type=_TEXT)
        return StreamAnswer(_with_page_headers(request, refusal))
    csrf = CsrfViewMiddleware(_unused_get_response)
    csrf.process_request(request)  # the CSRF cookie's secret, if the browser sent a valid one
    token = get_token(request)
    response = HttpResponse(content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    response = csrf.process_response(request, response)  # sets the CSRF cookie the token needs
    return StreamAnswer(
        _with_page_headers(request, response), StreamViewer(team_id, request.user.pk, token)
    )


def _start(response: HttpResponse) -> dict:
    """The ASGI response start of ``response``, as Django's ASGI handler builds it."""
    headers = [(name.encode("latin1"), value.encode("latin1")) for name, value in response.items()]
    headers += [
        (b"set-cookie", cookie.output(header="").strip().encode("ascii"))
        for cookie in response.cookies.values()
    ]
    return {"type": "http.response.start", "status": response.status_code, "headers": headers}


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET`` of the progress stream: authorise, then write events until the pipeline is done,
    the viewer leaves the team, or the client goes away."""
    listener = get_listener(live.render_progress)
    try:
        answer = await listener.run_read(authorize_stream, scope)
    except Exception:
        logger.exception("live stream: could not authorise the request")
        answer = StreamAnswer(HttpResponse(UNAVAILABLE, status=503, content_type=_TEXT))
    await send(_start(answer.response))
    viewer = answer.viewer
    if viewer is None:
        await send({"type": "http.response.body", "body": answer.response.content})
        return
    events = live.event_stream(listener, viewer.team_id, viewer.csrf_token, viewer.user_id)
    writer = asyncio.ensure_future(_write(send, events))
    watcher = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, watcher):
            task.cancel()
        outcomes = await asyncio.gather(writer, watcher, return_exceptions=True)
        await events.aclose()  # unsubscribes (its finally); nothing to do if it never started
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            logger.error("live stream ended with an error: %r", outcome)


async def _write(send: Send, events: AsyncIterator[bytes]) -> None:
    async for chunk in events:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def with_live_stream(django_application: ASGIApp) -> ASGIApp:
    """The ASGI application: the progress stream's GETs served here, the rest by Django."""
    stream_path: str | None = None

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal stream_path
        if scope["type"] == "http" and scope.get("method") == "GET":
            if stream_path is None:
                # Without the script prefix: compared with the path below its root_path.
                stream_path = "/" + reverse("progress_stream").removeprefix(get_script_prefix())
            path = scope.get("path", "")
            root_path = scope.get("root_path", "")
            if path.startswith(root_path):
                path = path[len(root_path) :]
            if path == stream_path:
                await serve_stream(scope, receive, send)
                return
        await django_application(scope, receive, send)

    return application
