"""Live progress: the SSE stream, the polling fragment and the JSON status endpoint.

Markup for the progress page (htmx 2 and its SSE extension loaded: django-htmx's
``{% htmx_script extensions="hx-sse" %}`` in the base template)::

    <div id="progress-live"
         hx-ext="sse"
         sse-connect="{% url 'progress_stream' %}"
         sse-swap="progress"
         sse-close="done"
         hx-on::sse-open="this.dataset.live = 'on'"
         hx-on::sse-error="this.dataset.live = 'off'">
      {% include "onboarding/_progress.html" with p=progress %}
    </div>
    <div hx-get="{% url 'progress_fragment' %}"
         hx-trigger="every 5s [document.getElementById('progress-live').dataset.live !== 'on']"
         hx-target="#progress-live"
         hx-swap="innerHTML"></div>

with ``progress = onboarding.progress_snapshot.build_snapshot(team.pk)`` in the page's context
(rendered with ``render(request, ...)`` so ``{% csrf_token %}`` works). The poller stays outside
``#progress-live`` because every ``progress`` event replaces that element's content; it only
polls while the stream is not open (no EventSource, a proxy that refuses streams, a WSGI server).

The fragment endpoint answers 286 once the pipeline is complete or failed, which stops htmx's
polling; the stream sends ``event: done`` then and closes (``sse-close="done"``).

Stream protocol (``text/event-stream``):
- ``event: progress`` with the rendered ``onboarding/_progress.html``, one ``data:`` line per
  line of HTML: first a full snapshot, then a full fragment after every change of the team's
  pipeline (status, stage, counters), and again after the server's database listener
  reconnected (NOTIFY is at-most-once, so a reconnect is followed by a fresh snapshot);
- ``event: done`` when the pipeline is complete or failed, then the server closes the stream;
- ``: keepalive`` comments every ~15 s (proxies and browsers drop silent connections).

The stream's GETs are served by ``onboarding.live_asgi``, in front of Django's request path
(``settings/asgi.py``), with ``event_stream`` below; ``progress_stream`` is what Django answers
on that path when it is reached without that front.
The stream needs ASGI (uvicorn): under WSGI, ``runserver`` and pytest-django's ``live_server`` an
endless async stream never sends a byte. Every endpoint requires login and shows only the
user's own team; a user without a team gets 404, an anonymous request 403.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.db import connections
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseForbidden,
    JsonResponse,
)
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

from onboarding.http import team_of
from onboarding.listener import TICK, Listener, keepalive_seconds
from onboarding.models import Membership
from onboarding.progress_snapshot import ProgressSnapshot, build_snapshot
from pipeline.scope import team_scope

logger = logging.getLogger(__name__)

TEMPLATE = "onboarding/_progress.html"
# How long a new stream waits for the listener's LISTEN before reading its first snapshot
# anyway (the listener re-sends a snapshot once it is listening).
LISTEN_WAIT_SECONDS = 5.0
# htmx stops polling on this status (https://htmx.org/attributes/hx-trigger/).
STOP_POLLING = 286
# The stream renders a team's fragment once per change for all of that team's viewers and puts
# each viewer's own CSRF token in afterwards.
_CSRF_PLACEHOLDER = "csrf-token-placeholder-0b9e"
_CSRF_PLACEHOLDER_BYTES = _CSRF_PLACEHOLDER.encode()
_KEEPALIVE = b": keepalive\n\n"
NOT_LOGGED_IN = "Your session has ended. Log in again to follow the progress."


@dataclass(frozen=True)
class RenderedProgress:
    html: str
    # The whole `progress` event, encoded once for every stream of the team (bytes pass
    # through Django's streaming response without a per-stream encode).
    event: bytes
    finished: bool
    running: bool

    def event_for(self, csrf_token: str) -> bytes:
        """The event with this stream's own CSRF token (only a failed run's Retry form has
        one)."""
        if _CSRF_PLACEHOLDER_BYTES not in self.event:
            return self.event
        return self.event.replace(_CSRF_PLACEHOLDER_BYTES, csrf_token.encode())


def render_progress(team_id: int) -> RenderedProgress:
    """Read and render a team's progress for the stream (runs on the listener's reader)."""
    snapshot = build_snapshot(team_id)
    html = render_to_string(TEMPLATE, {"p": snapshot, "csrf_token": _CSRF_PLACEHOLDER})
    return RenderedProgress(
        html=html,
        event=sse_event("progress", html).encode(),
        finished=snapshot.finished,
        running=snapshot.is_running,
    )


def sse_event(event: str, data: str) -> str:
    # One data: line per line: the SSE format ends a field at a newline
    # (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
    lines = data.splitlines() or [""]
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def _close_thread_connections() -> None:
    for connection in connections.all(initialized_only=True):
        connection.close()


def progress_stream(request: HttpRequest) -> HttpResponse:
    """What Django itself answers on the stream's path. The stream is served in front of Django
    by ``onboarding.live_asgi`` (``settings/asgi.py``), so Django sees this path only for other
    methods, or when it is served without that front (WSGI, ``runserver``, the test client),
    where an endless stream would be buffered forever and hold a worker: refuse at once, the
    page polls instead."""
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    return HttpResponse(
        "The live stream needs the ASGI application (settings.asgi, under uvicorn); this page"
        " falls back to polling.",
        status=503,
        content_type="text/plain",
    )


def _member_ids(team_id: int) -> frozenset[int]:
    return frozenset(Membership.objects.filter(team_id=team_id).values_list("user_id", flat=True))


async def is_still_member(listener: Listener, user_id: int | None, team_id: int) -> bool:
    """Whether ``user_id`` is still in ``team_id``, from a read of the team's members at most
    half a keepalive interval old: one query per team for all of its open streams, not one per
    stream (5,000 tabs re-checking one by one kept the reader busy for seconds)."""
    members = await listener.shared_read(
        ("members", team_id), keepalive_seconds() / 2, _member_ids, team_id
    )
    return user_id in members


async def event_stream(
    listener: Listener, team_id: int, csrf_token: str, user_id: int | None = None
) -> AsyncIterator[bytes]:
    # Subscribe before the first read: a change committed after the read is then always
    # delivered, and one committed before it is in the snapshot.
    subscription = listener.subscribe(team_id)
    try:
        await listener.wait_listening(LISTEN_WAIT_SECONDS)
        shown = await listener.snapshot(team_id)
        yield shown.result.event_for(csrf_token)
        checked_at = listener.loop.time()
        check_every = keepalive_seconds() / 2
        while not shown.result.finished:
            delivery = await subscription.get()
            if delivery is None:  # the listener stopped
                return
            # A user removed from the team stops receiving its progress within one keepalive
            # interval: each stream re-checks at most every half interval (every tick of an
            # idle stream), never once per change, against a read of the team's members at
            # most half an interval old that all of the team's streams share.
            if listener.loop.time() - checked_at >= check_every:
                checked_at = listener.loop.time()
                if not await is_still_member(listener, user_id, team_id):
                    yield sse_event("done", "not a member").encode()
                    return
            if delivery is TICK:
                yield _KEEPALIVE
            elif delivery.sequence < shown.sequence:
                continue  # read before what this stream already showed
            elif delivery.reason == "refresh" and delivery.result.html == shown.result.html:
                continue
            else:
                shown = delivery
                yield shown.result.event_for(csrf_token)
        yield sse_event("done", "done").encode()
    finally:
        listener.unsubscribe(subscription)


def _snapshot_or_refusal(request: HttpRequest) -> ProgressSnapshot | HttpResponse:
    if not request.user.is_authenticated:
        return HttpResponseForbidden(NOT_LOGGED_IN)
    return build_snapshot(team_of(request).pk)


@require_GET
def progress_fragment(request: HttpRequest) -> HttpResponse:
    """The progress partial, for the polling fallback; 286 once complete or failed."""
    snapshot = _snapshot_or_refusal(request)
    if isinstance(snapshot, HttpResponse):
        return snapshot
    html = render_to_string(TEMPLATE, {"p": snapshot}, request=request)
    response = HttpResponse(html, status=STOP_POLLING if snapshot.finished else 200)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def progress_status(request: HttpRequest) -> HttpResponse:
    """JSON: the database's view of the run next to the queue's view of its current job."""
    snapshot = _snapshot_or_refusal(request)
    if isinstance(snapshot, HttpResponse):
        return snapshot
    data = snapshot.as_json()
    # What the dashboard shows (pipeline.scope: the latest completed run), with its counts.
    shown = team_scope(snapshot.team_id)
    data["dashboard"] = shown.as_json() if shown is not None else None
    response = JsonResponse(data)
    response["Cache-Control"] = "no-store"
    return response
