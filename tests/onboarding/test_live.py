"""The live progress stream through a real uvicorn and real Postgres LISTEN/NOTIFY: what a
connected browser receives when the pipeline changes in the database."""

from __future__ import annotations

import datetime
import re
import threading
import time

import httpx2 as httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from onboarding.listener import APPLICATION_NAME
from onboarding.models import Membership, Repository, Team
from onboarding.progress_delay import DELAYED_AFTER_SECONDS
from pipeline import progress, transitions
from pipeline.models import PipelineRun
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def status_of(event) -> str:
    match = re.search(r'data-status="([a-z_]+)"', event.data)
    assert match, event.data
    return match.group(1)


def run_of(event) -> str:
    match = re.search(r'data-run="(\d*)"', event.data)
    assert match, event.data
    return match.group(1)


def counter(event, name: str) -> str:
    match = re.search(rf'data-counter="{name}">([^<]*)<', event.data)
    assert match, f"no {name} counter in {event.data}"
    return match.group(1).strip()


def stage_state(event, stage: str) -> str:
    match = re.search(rf'data-stage="{stage}" data-state="([a-z]+)"', event.data)
    assert match, event.data
    return match.group(1)


def listener_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


def terminate_listener() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def other_team_user(db):
    other = Team.objects.create(name="Globex")
    user = get_user_model().objects.create_user(username="grace", password="x" * 12)
    Membership.objects.create(team=other, user=user, role=Membership.Role.ADMIN)
    repos = [
        Repository.objects.create(team=other, github_id=5000 + i, full_name=f"globex/r{i}")
        for i in range(2)
    ]
    return other, user, repos


def test_committed_start_reaches_a_connected_client(sse_connect, team, admin_user, repositories):
    client = sse_connect(admin_user)
    assert client.status_code == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    snapshot = client.next_event()
    assert snapshot.event == "progress"
    assert status_of(snapshot) == PipelineStatus.NOT_STARTED

    run = transitions.start_pipeline(team, [r.pk for r in repositories])

    event = client.next_event()
    assert event.event == "progress"
    assert status_of(event) == PipelineStatus.SYNCING
    assert run_of(event) == str(run.pk)
    assert stage_state(event, PipelineStatus.SYNCING) == "running"
    assert stage_state(event, PipelineStatus.LLM_PROCESSING) == "waiting"
    assert counter(event, "repositories") == "0 / 3"


def test_rolled_back_change_never_reaches_the_client(sse_connect, team, admin_user, repositories):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    client = sse_connect(admin_user)
    client.next_event()  # snapshot

    with pytest.raises(RuntimeError), transaction.atomic():
        progress.report(run, prs_synced=111)
        raise RuntimeError("the stage failed after reporting")
    # Had the rolled-back NOTIFY been delivered, the stream would send a fragment now.
    client.assert_no_event(within=1.5)

    progress.report(run, prs_synced=222)
    event = client.next_event()
    assert counter(event, "prs_synced") == "222"
    assert "111" not in event.data


def test_client_connecting_mid_run_gets_the_current_state_first(
    sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    progress.report(run, repositories_done=2, prs_synced=42)

    client = sse_connect(admin_user)
    snapshot = client.next_event()

    assert snapshot.event == "progress"
    assert status_of(snapshot) == PipelineStatus.SYNCING
    assert stage_state(snapshot, PipelineStatus.SYNCING) == "running"
    assert counter(snapshot, "repositories") == "2 / 3"
    assert counter(snapshot, "prs_synced") == "42"


def test_two_teams_streams_never_see_each_others_events(
    sse_connect, team, admin_user, repositories, other_team_user
):
    other_team, other_user, other_repos = other_team_user
    ours = sse_connect(admin_user)
    theirs = sse_connect(other_user)
    ours.next_event()
    theirs.next_event()

    their_run = transitions.start_pipeline(other_team, [r.pk for r in other_repos])
    their_event = theirs.next_event()
    assert run_of(their_event) == str(their_run.pk)
    ours.assert_no_event(within=1.0)

    our_run = transitions.start_pipeline(team, [r.pk for r in repositories])
    our_event = ours.next_event()
    assert run_of(our_event) == str(our_run.pk)
    assert counter(our_event, "repositories") == "0 / 3"
    theirs.assert_no_event(within=1.0)


def test_garbage_on_the_channel_is_ignored_and_the_stream_goes_on(
    sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    client = sse_connect(admin_user)
    client.next_event()

    with connection.cursor() as cursor:
        for payload in ["not json", '{"team": "x"}', "{}", f'{{"team": {team.pk + 999}}}']:
            cursor.execute("SELECT pg_notify('pipeline_status', %s)", [payload])
    client.assert_no_event(within=1.0)

    progress.report(run, prs_synced=5)
    assert counter(client.next_event(), "prs_synced") == "5"


def test_all_streams_of_the_process_share_one_listening_connection(
    sse_connect, team, admin_user, other_team_user
):
    _, other_user, _ = other_team_user
    clients = [sse_connect(admin_user) for _ in range(3)] + [sse_connect(other_user)]
    for client in clients:
        client.next_event()

    assert listener_backends() == 1


def test_closed_streams_leave_no_subscriber_behind(asgi_server, sse_connect, team, admin_user):
    from onboarding.listener import get_listener
    from onboarding.live import render_progress

    async def subscribers() -> int:
        return get_listener(render_progress).subscriber_count

    clients = [sse_connect(admin_user) for _ in range(3)]
    for client in clients:
        client.next_event()
    assert asgi_server.run(subscribers()) == 3

    for client in clients:
        client.close()

    wait_for(lambda: asgi_server.run(subscribers()) == 0, timeout=10)


def request_threads() -> int:
    """Threads asgiref starts for requests' sync code (unnamed ThreadPoolExecutor workers)."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor-"))


def test_open_streams_do_not_each_hold_a_server_thread(sse_connect, team, admin_user):
    before = request_threads()

    clients = [sse_connect(admin_user) for _ in range(6)]
    for client in clients:
        client.next_event()

    wait_for(lambda: request_threads() <= before + 1, timeout=10)
    for client in clients:
        client.close()
    wait_for(lambda: request_threads() <= before + 1, timeout=10)


def test_stream_survives_the_listener_connection_being_terminated(
    sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    client = sse_connect(admin_user)
    client.next_event()

    assert terminate_listener() == 1
    # The listener reconnects and re-sends a full snapshot (a NOTIFY in the gap would be lost).
    resync = client.next_event(timeout=15)
    assert resync.event == "progress"
    assert status_of(resync) == PipelineStatus.SYNCING

    progress.report(run, prs_synced=7)
    later = client.next_event()
    assert counter(later, "prs_synced") == "7"
    wait_for(lambda: listener_backends() == 1)


def test_change_made_while_the_listener_is_down_arrives_after_it_reconnects(
    sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    client = sse_connect(admin_user)
    client.next_event()

    terminate_listener()
    progress.report(run, prs_synced=99)  # its NOTIFY may be lost in the gap

    event = client.next_event(timeout=15)
    while counter_or_none(event, "prs_synced") != "99":
        event = client.next_event(timeout=15)


def counter_or_none(event, name: str) -> str | None:
    match = re.search(rf'data-counter="{name}">([^<]*)<', event.data)
    return match.group(1).strip() if match else None


def test_stream_sends_done_and_closes_when_the_pipeline_fails(
    sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    client = sse_connect(admin_user)
    client.next_event()

    transitions.fail_stage(attempt.pk, "GitHub connection is broken: reconnect GitHub")

    event = client.next_event()
    assert status_of(event) == PipelineStatus.FAILED
    assert stage_state(event, PipelineStatus.SYNCING) == "failed"
    assert "GitHub connection is broken: reconnect GitHub" in event.data
    assert client.next_event().event == "done"
    assert client.ended.wait(5)


def test_retry_form_in_a_streamed_fragment_carries_this_viewers_csrf_token(
    asgi_server, sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    attempt = transitions.begin_stage(run.pk, PipelineStatus.SYNCING, job_id=None)
    transitions.fail_stage(attempt.pk, "GitHub answered 502 too many times.")
    client = sse_connect(admin_user)
    event = client.next_event()
    form = re.search(
        r'<form method="post" action="([^"]+)" class="admin-only">\s*<input type="hidden"'
        r' name="csrfmiddlewaretoken" value="([^"]+)">',
        event.data,
    )
    assert form, event.data
    csrf_cookie = re.search(r"csrftoken=([^;]+)", client.headers.get("set-cookie", ""))
    assert csrf_cookie, "the stream sets the CSRF cookie the form's token belongs to"

    # Submitting that form, as the browser would, resumes the pipeline.
    response = httpx.post(
        asgi_server.url + form.group(1),
        data={"csrfmiddlewaretoken": form.group(2)},
        cookies={**client.cookies, "csrftoken": csrf_cookie.group(1)},
    )

    assert response.status_code == 302
    team.refresh_from_db()
    assert team.pipeline_status == PipelineStatus.SYNCING


def test_stream_of_a_finished_pipeline_sends_the_snapshot_then_done(
    sse_connect, team, admin_user, repositories
):
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    for stage in (
        PipelineStatus.SYNCING,
        PipelineStatus.LLM_PROCESSING,
        PipelineStatus.COMPUTING_METRICS,
        PipelineStatus.COMPUTING_INSIGHTS,
    ):
        attempt = transitions.begin_stage(run.pk, stage, job_id=None)
        transitions.complete_stage(attempt.pk, {})

    client = sse_connect(admin_user)
    snapshot = client.next_event()
    assert status_of(snapshot) == PipelineStatus.COMPLETE
    assert client.next_event().event == "done"
    assert client.ended.wait(5)


def test_idle_stream_sends_keepalive_comments(sse_connect, settings, team, admin_user):
    settings.LIVE_KEEPALIVE_SECONDS = 0.3
    client = sse_connect(admin_user)
    client.next_event()

    wait_for(lambda: client.keepalives >= 2, timeout=5)
    assert client.events.empty()


def test_delay_notice_appears_without_any_database_event(
    sse_connect, settings, team, admin_user, repositories
):
    """The worker goes away and nothing NOTIFYs: the periodic refresh still tells the user."""
    settings.LIVE_KEEPALIVE_SECONDS = 0.3
    run = transitions.start_pipeline(team, [r.pk for r in repositories])
    started = timezone.now() - datetime.timedelta(seconds=DELAYED_AFTER_SECONDS + 30)
    PipelineRun.objects.filter(pk=run.pk).update(started_at=started)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now())")
    client = sse_connect(admin_user)
    assert "data-delayed" not in client.next_event().data  # a worker is alive

    with connection.cursor() as cursor:  # the worker vanishes; no NOTIFY
        cursor.execute("DELETE FROM procrastinate_workers")

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        event = client.next_event(timeout=15)
        if "data-delayed" in event.data:
            break
    else:
        pytest.fail("the delay notice never appeared")
    assert "Processing is delayed: no worker is running" in event.data


def test_a_real_run_is_watched_live_from_start_to_done(
    start_worker, sse_connect, team, admin_user, repositories
):
    stages = ",".join(f"{stage}=tests.onboarding.live_stages.reporting" for stage in STAGE_ORDER)
    start_worker({"PIPELINE_STAGE_OVERRIDES": stages})
    client = sse_connect(admin_user)
    assert status_of(client.next_event()) == PipelineStatus.NOT_STARTED

    transitions.start_pipeline(team, [r.pk for r in repositories])
    events = []
    while not events or events[-1].event != "done":
        events.append(client.next_event(timeout=60))

    progress_events = [e for e in events if e.event == "progress"]
    order = [PipelineStatus.SYNCING, *STAGE_ORDER[1:], PipelineStatus.COMPLETE]
    seen = [order.index(status_of(e)) for e in progress_events]
    assert seen == sorted(seen), "the page never goes back to an earlier stage"
    assert status_of(progress_events[0]) == PipelineStatus.SYNCING
    # The sync's counters moved while it ran, not only at its end.
    assert {"1 / 3", "2 / 3"} & {counter_or_none(e, "repositories") for e in progress_events}, (
        "no intermediate sync progress was streamed"
    )
    final = progress_events[-1]
    assert status_of(final) == PipelineStatus.COMPLETE
    assert all(stage_state(final, stage) == "done" for stage in STAGE_ORDER)
    assert counter(final, "weeks_computed") == "13"
    assert f'href="{reverse("dashboard")}"' in final.data
    assert client.ended.wait(5)


def test_anonymous_stream_is_refused(sse_connect):
    client = sse_connect(None)

    assert client.status_code == 403
    assert client.events.get(timeout=5) is None  # no event, the response just ends


def test_user_without_a_team_gets_404(sse_connect, db):
    loner = get_user_model().objects.create_user(username="loner", password="x" * 12)

    client = sse_connect(loner)

    assert client.status_code == 404
