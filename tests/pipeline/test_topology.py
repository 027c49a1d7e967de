"""Worker topology as the Procfile ships it (one worker on the sync queue, one on llm,default):
while one team's sync is held open, another team's whole pipeline and its e-mail finish, and a
third team's stage held by a dead worker is rescued and finishes. Nothing waits behind the long
sync; it then completes once released."""

from __future__ import annotations

import os
import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from onboarding.models import Membership, Repository, Team
from onboarding.supervisor import read_procfile
from pipeline import queue, transitions
from pipeline.models import EmailOutbox, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import BASE_DIR, finish_stages, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

QUICK = "tests.pipeline.fault_stages.quick"
HELD = "tests.pipeline.held_stages.held_for_one_team"


def procfile_worker_queues() -> dict[str, str]:
    """The --queues of each worker process type, as the Procfile expands them by default."""
    queues = {}
    for process_type in read_procfile(BASE_DIR / "Procfile"):
        words = subprocess.run(
            ["/bin/sh", "-c", f"printf '%s\\n' {process_type.command}"],
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if "--queues" in words:
            queues[process_type.name] = words[words.index("--queues") + 1]
    return queues


def team_with_member(name: str, github_id: int) -> tuple[Team, Repository]:
    team = Team.objects.create(name=name)
    user = get_user_model().objects.create_user(
        username=name.lower(), email=f"{name.lower()}@example.com", password="x" * 12
    )
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    repository = Repository.objects.create(
        team=team, github_id=github_id, full_name=f"{name.lower()}/api"
    )
    return team, repository


def status(team: Team) -> str:
    team.refresh_from_db()
    return team.pipeline_status


def hold_by_dead_worker(job_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour')"
            " RETURNING id"
        )
        (worker_id,) = cursor.fetchone()
        cursor.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s",
            [worker_id, job_id],
        )


def test_a_held_sync_delays_no_other_teams_stages_email_or_rescue(start_worker, tmp_path):
    long_sync, _ = team_with_member("Longsync", 1)
    other, other_repo = team_with_member("Other", 2)
    stranded, stranded_repo = team_with_member("Stranded", 3)
    # The stranded team's detection job was taken by a worker that then died.
    stranded_run = transitions.start_pipeline(stranded, [stranded_repo.pk])
    finish_stages(stranded_run, [PipelineStatus.SYNCING])
    stranded_run.refresh_from_db()
    hold_by_dead_worker(stranded_run.current_job_id)

    release = tmp_path / "release"
    env = {
        "PIPELINE_STAGE_OVERRIDES": ",".join(
            f"{s}={HELD if s == PipelineStatus.SYNCING else QUICK}" for s in STAGE_ORDER
        ),
        "HOLD_TEAM": long_sync.name,
        "HOLD_RELEASE_FILE": str(release),
        "HOLD_MAX_SECONDS": "60",
    }
    worker_queues = procfile_worker_queues()
    workers = [start_worker(env, queues=q) for q in worker_queues.values()]
    assert set(worker_queues) == {"worker_sync", "worker"}

    held_run = transitions.start_pipeline(long_sync, [long_sync.repositories.first().pk])
    wait_for(lambda: held_run.attempts.filter(stage=PipelineStatus.SYNCING).exists(), timeout=60)

    other_run = transitions.start_pipeline(other, [other_repo.pk])

    def others_done() -> bool:
        return (
            status(other) == PipelineStatus.COMPLETE
            and EmailOutbox.objects.filter(run=other_run, status=EmailOutbox.Status.SENT).exists()
            and status(stranded) == PipelineStatus.COMPLETE
        )

    wait_for(others_done, timeout=50)
    # All of that happened while the long sync was still running.
    assert status(long_sync) == PipelineStatus.SYNCING
    assert not release.exists()
    sync_attempt = held_run.attempts.get(stage=PipelineStatus.SYNCING)
    assert sync_attempt.finished_at is None

    release.touch()
    wait_for(lambda: status(long_sync) == PipelineStatus.COMPLETE, timeout=60)
    sync_attempt.refresh_from_db()
    assert sync_attempt.outcome == StageAttempt.Outcome.SUCCEEDED
    assert sync_attempt.counts == {"held": True, "released": True}
    assert all(w.process.poll() is None for w in workers)
    assert queue.live_stage_jobs(held_run.pk, PipelineStatus.SYNCING) == 0
