"""Status events on the Postgres channel the web side LISTENs to.

``pg_notify`` is sent on Django's connection, inside the caller's transaction, so it is delivered
only if (and when) that transaction commits, never after a rollback. The payload carries ids
only: any role can LISTEN to any channel, and the stream re-reads the rows with the viewer's team
filter anyway.
"""

from __future__ import annotations

import json

from django.db import connection

CHANNEL = "pipeline_status"


def publish(*, team_id: int, run_id: int | None, status: str, event: str, **ids: int) -> None:
    payload = {"team": team_id, "run": run_id, "status": status, "event": event, **ids}
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, json.dumps(payload)])
