"""The live operations page (staff only): ``/admin/operations/`` and its Server-Sent Events
stream. The stream rides the progress page's LISTEN connection (``onboarding.listener``,
subscribed as ``ALL_TEAMS``): after any team's status change the numbers are read once
(``pipeline.ops``), at most twice a second, and pushed to every open operations page. Anyone not
staff, logged in or not, gets 403 on both."""

from __future__ import annotations

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.contrib import admin
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, StreamingHttpResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse

from onboarding.listener import ALL_TEAMS, TICK, Listener, get_listener
from onboarding.live import _close_thread_connections, render_progress, sse_event
from pipeline import ops

FRAGMENT = "admin/pipeline/_operations.html"
_FORBIDDEN = "Staff only."
_KEEPALIVE = b": keepalive\n\n"


def render_operations(_key: int = ALL_TEAMS) -> bytes:
    """The whole ``ops`` event (read and rendered once for every open page)."""
    html = render_to_string(FRAGMENT, {"ops": ops.read_snapshot()})
    return sse_event("ops", html).encode()


def _is_staff(request: HttpRequest) -> bool:
    return bool(request.user.is_authenticated and request.user.is_active and request.user.is_staff)


def operations(request: HttpRequest) -> HttpResponse:
    if not _is_staff(request):
        return HttpResponseForbidden(_FORBIDDEN)
    context = {
        **admin.site.each_context(request),
        "title": "Live operations",
        "ops": ops.read_snapshot(),
        "stream_url": reverse("operations_stream"),
    }
    return render(request, "admin/pipeline/operations.html", context)


async def operations_stream(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    if not isinstance(request, ASGIRequest):
        return HttpResponse("The live stream needs an ASGI server.", status=503)
    listener = get_listener(render_progress)
    if not await listener.run_read(_is_staff, request):
        return HttpResponseForbidden(_FORBIDDEN)
    await sync_to_async(_close_thread_connections)()
    response = StreamingHttpResponse(_events(listener), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _events(listener: Listener) -> AsyncIterator[bytes]:
    subscription = listener.subscribe(ALL_TEAMS, read=render_operations)
    try:
        await listener.wait_listening(5.0)
        shown = await listener.snapshot(ALL_TEAMS)
        yield shown.result
        while True:
            delivery = await subscription.get()
            if delivery is None:
                return
            if delivery is TICK:
                yield _KEEPALIVE
            elif delivery.sequence > shown.sequence:
                shown = delivery
                yield shown.result
    finally:
        listener.unsubscribe(subscription)
