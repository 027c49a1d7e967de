"""Live counters of a running stage (repositories synced, PRs analysed, ...).

Counters are merged into ``PipelineRun.progress`` and announced on the status channel in one
transaction, so the progress page never shows a number that was rolled back. Stages call this
as they go (page by page), not only at the end, which makes it the place where a stage body
checks that its execution should go on (``pipeline.execution.checkpoint``).
"""

from __future__ import annotations

import json

from django.db import connection, transaction

from pipeline import execution, notify
from pipeline.models import PipelineRun


def report(run: PipelineRun, **counters: int | str) -> None:
    """Merge ``counters`` into the run's progress and notify the progress page. Raises
    execution.HandBack / Superseded when this execution should stop."""
    execution.checkpoint()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE pipeline_pipelinerun SET progress = progress || %s::jsonb"
                " WHERE id = %s RETURNING stage",
                [json.dumps(counters), run.pk],
            )
            (stage,) = cursor.fetchone()
        notify.publish(team_id=run.team_id, run_id=run.pk, status=stage, event="progress")
    run.progress = {**(run.progress or {}), **counters}
