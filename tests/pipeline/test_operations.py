"""The live operations page: staff only (403 for anyone else, page and stream), the numbers
it shows, and its stream pushing a new reading when a pipeline changes status."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.urls import reverse

from pipeline import ops, transitions
from pipeline.status import PipelineStatus
from tests.conftest import finish_stages
from tests.fixtures.live import SSEClient, session_cookies


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("sam", "sam@example.com", "x" * 12, is_staff=True)


def sql(query: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(query, params or [])


@pytest.mark.django_db
def test_the_page_is_staff_only(client, admin_user, staff):
    assert client.get(reverse("operations")).status_code == 403
    client.force_login(admin_user)  # a team admin, not staff
    assert client.get(reverse("operations")).status_code == 403
    client.force_login(staff)
    assert client.get(reverse("operations")).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_the_stream_is_staff_only(asgi_server, admin_user):
    url = asgi_server.url + reverse("operations_stream")
    anonymous = SSEClient(url, {})
    member = SSEClient(url, session_cookies(admin_user))
    try:
        assert anonymous.status_code == 403
        assert member.status_code == 403
    finally:
        anonymous.close()
        member.close()


@pytest.mark.django_db
def test_the_numbers_describe_queues_stages_and_pipelines(team, repositories):
    done = transitions.start_pipeline(team, [repositories[0].pk])
    finish_stages(done, [PipelineStatus.SYNCING])
    sql(
        "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE args->>'run_id' = %s "
        "AND task_name = 'pipeline.stage.sync'",
        [str(done.pk)],
    )
    sql("INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')")
    sql(
        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = "
        "(SELECT max(id) FROM procrastinate_workers) WHERE status = 'todo'"
    )

    snap = ops.read_snapshot()

    assert snap.running == 1 and snap.running_by_kind == {"onboarding": 1}
    assert [(q.queue, q.doing) for q in snap.queues] == [("llm", 1)]
    assert snap.doing == 1 and snap.stalled == 1
    sync = next(s for s in snap.stages if s.stage == PipelineStatus.SYNCING)
    assert sync.attempts == 1 and sync.failures == 0 and sync.p50_ms is not None
    assert snap.drift == 0


@pytest.mark.django_db(transaction=True)
def test_the_stream_pushes_a_new_reading_when_a_pipeline_starts(
    asgi_server, staff, team, repositories, empty_queue_after
):
    client = SSEClient(asgi_server.url + reverse("operations_stream"), session_cookies(staff))
    try:
        first = client.next_event()
        assert first.event == "ops"
        assert 'id="ops-running">0<' in first.data

        transitions.start_pipeline(team, [repositories[0].pk])

        event = client.next_event()
        while 'id="ops-running">1<' not in event.data:
            event = client.next_event()
        assert 'data-queue="sync"' in event.data
    finally:
        client.close()
