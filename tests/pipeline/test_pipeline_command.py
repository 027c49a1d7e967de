"""``manage.py pipeline`` for operators: cancel and restart (audited), and --team that never
guesses between two teams of the same name."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from onboarding.models import Repository, Team
from pipeline import transitions
from pipeline.invariant import find_drift
from pipeline.models import PipelineRun, StaffAction
from pipeline.status import PipelineStatus

pytestmark = pytest.mark.django_db


def test_cancel_by_id_ends_the_run_and_is_audited(team, repositories, capsys):
    run = transitions.start_pipeline(team, [repositories[0].pk])

    call_command("pipeline", "cancel", "--team", str(team.pk), "--reason", "wrong org")

    run.refresh_from_db()
    assert run.state == PipelineRun.State.CANCELLED
    assert "cancelled" in capsys.readouterr().out
    entry = StaffAction.objects.get()
    assert entry.username.startswith("manage.py") and entry.reason == "wrong org"
    assert find_drift() == []


def test_restart_by_unique_name(team, repositories):
    transitions.start_pipeline(team, [repositories[0].pk])

    call_command("pipeline", "restart", "--team", "Acme", "--reason", "bad sync")

    assert PipelineRun.objects.filter(state=PipelineRun.State.SUPERSEDED).count() == 1
    assert PipelineRun.objects.get(state=PipelineRun.State.RUNNING).stage == PipelineStatus.SYNCING
    assert find_drift() == []


def test_an_ambiguous_name_is_refused_with_the_ids(team, repositories):
    twin = Team.objects.create(name="Acme")
    Repository.objects.create(team=twin, github_id=9, full_name="acme2/x")
    transitions.start_pipeline(team, [repositories[0].pk])

    with pytest.raises(
        CommandError, match=rf"2 teams are named 'Acme' \(ids {team.pk}, {twin.pk}\)"
    ):
        call_command("pipeline", "cancel", "--team", "Acme", "--reason", "x")

    assert PipelineRun.objects.get().state == PipelineRun.State.RUNNING
    assert not StaffAction.objects.exists()


def test_cancel_without_a_running_pipeline_fails_and_is_audited_as_refused(team):
    with pytest.raises(CommandError, match="no running pipeline"):
        call_command("pipeline", "cancel", "--team", str(team.pk), "--reason", "x")

    assert StaffAction.objects.get().succeeded is False


def test_an_unknown_team_is_an_error():
    with pytest.raises(CommandError, match="No team with id 999"):
        call_command("pipeline", "status", "--team", "999")


@pytest.mark.django_db(transaction=True)
def test_status_watch_redraws_when_a_pipeline_starts(
    team, repositories, tmp_path, empty_queue_after
):
    import os
    import subprocess
    import sys

    from tests.conftest import BASE_DIR, test_database_url, wait_for

    out = tmp_path / "watch.txt"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.test",
        "DATABASE_URL": test_database_url(),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "pipeline", "status", "--watch", "--redraws", "2"],
        cwd=BASE_DIR,
        env=env,
        stdout=out.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "running pipelines: 0" in out.read_text(), timeout=60)
        transitions.start_pipeline(team, [repositories[0].pk])
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    text = out.read_text()
    assert "running pipelines: 1" in text
    assert "'Acme'" in text and "onboarding" in text and "Syncing pull requests" in text
    assert "repositories_total=1" in text
