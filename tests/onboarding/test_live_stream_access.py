"""Who may open the live progress stream, which is served in front of Django's request path
(onboarding/live_asgi.py): Django's own session rules still decide (an expired session, a
password changed elsewhere, a deactivated account), and the response carries the headers every
page of the site has; a member removed from the team stops receiving it. Through a real
uvicorn and real PostgreSQL."""

from __future__ import annotations

import datetime

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from onboarding import live_asgi
from onboarding.models import Membership
from tests.conftest import wait_for
from tests.fixtures.live import session_cookies

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_stream_answers_with_the_security_headers_of_every_page(sse_connect, admin_user):
    client = sse_connect(admin_user)

    assert client.status_code == 200
    assert client.headers["content-type"] == "text/event-stream"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-frame-options"] == "DENY"
    assert client.headers["x-content-type-options"] == "nosniff"
    assert client.headers["referrer-policy"] == settings.SECURE_REFERRER_POLICY
    assert client.next_event().event == "progress"


def test_an_expired_session_cannot_open_the_stream(sse_connect, admin_user):
    cookies = session_cookies(admin_user)
    Session.objects.filter(session_key=cookies[settings.SESSION_COOKIE_NAME]).update(
        expire_date=timezone.now() - datetime.timedelta(seconds=1)
    )

    client = sse_connect(cookies=cookies)

    assert client.status_code == 403
    assert client.events.get(timeout=5) is None


def test_a_password_changed_elsewhere_ends_the_old_sessions_access(sse_connect, admin_user):
    cookies = session_cookies(admin_user)
    assert sse_connect(cookies=cookies).status_code == 200

    admin_user.set_password("a new password, chosen after a scare")
    admin_user.save()

    assert sse_connect(cookies=cookies).status_code == 403


def test_a_deactivated_account_cannot_open_the_stream(sse_connect, admin_user):
    cookies = session_cookies(admin_user)
    admin_user.is_active = False
    admin_user.save(update_fields=["is_active"])

    assert sse_connect(cookies=cookies).status_code == 403


def test_a_made_up_session_cookie_is_refused(sse_connect, admin_user):
    session_cookies(admin_user)  # a real session exists; the cookie below is not it

    client = sse_connect(cookies={settings.SESSION_COOKIE_NAME: "x" * 32})

    assert client.status_code == 403


def test_a_member_removed_from_the_team_is_cut_off_while_the_others_stay(
    sse_connect, settings, team, admin_user
):
    settings.LIVE_KEEPALIVE_SECONDS = 0.3  # membership is re-checked every half interval
    colleague = get_user_model().objects.create_user(username="grace", password="x" * 12)
    Membership.objects.create(team=team, user=colleague, role=Membership.Role.MEMBER)
    leaving, staying = sse_connect(colleague), sse_connect(admin_user)
    assert leaving.next_event().event == staying.next_event().event == "progress"

    Membership.objects.filter(user=colleague).delete()

    done = leaving.next_event(timeout=5)
    assert (done.event, done.data) == ("done", "not a member")
    assert leaving.ended.wait(5)
    ticks = staying.keepalives
    wait_for(lambda: staying.keepalives >= ticks + 3, timeout=5)
    assert not staying.ended.is_set()


def stream_scope(cookies: dict[str, str]) -> dict:
    """The ASGI scope of a browser's GET of the stream with ``cookies``."""
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return {
        "type": "http",
        "method": "GET",
        "path": "/progress/stream/",
        "query_string": b"",
        "headers": [(b"cookie", cookie.encode()), (b"host", b"testserver")],
        "server": ("testserver", 80),
        "scheme": "http",
    }


def test_authorising_a_stream_reads_the_session_and_the_user_with_their_team_only(admin_user):
    scope = stream_scope(session_cookies(admin_user))
    connection.close()  # as on the reader thread: its connection is already open

    with CaptureQueriesContext(connection) as queries:
        answer = live_asgi.authorize_stream(scope)

    assert answer.viewer is not None and answer.viewer.team_id == admin_user.membership.team_id
    # The session row, then the user joined with their membership (onboarding.backends): a
    # reconnect storm opens a thousand of these at once.
    assert len(queries) == 2, [q["sql"] for q in queries]
    assert "django_session" in queries[0]["sql"]
    assert "onboarding_membership" in queries[1]["sql"]


def test_a_session_logged_in_by_djangos_own_backend_still_opens_the_stream(sse_connect, admin_user):
    """Sessions from before the membership-loading backend name Django's backend: they stay
    valid after a deploy (nobody is logged out)."""
    client = Client()
    client.force_login(admin_user, backend="django.contrib.auth.backends.ModelBackend")
    cookies = {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}

    stream = sse_connect(cookies=cookies)

    assert stream.status_code == 200
    assert stream.next_event().event == "progress"
