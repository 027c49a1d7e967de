"""The whole pipeline with every real stage: the demo GitHub over HTTP, a real worker, the LLM
through a local OpenAI-compatible server, the e-mail through a real SMTP sink, started the way
an operator would (`manage.py pipeline start`)."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from pipeline.invariant import find_drift
from pipeline.models import AIVerdict, EmailOutbox, Insight, PipelineRun, PullRequest, WeeklyMetric
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import wait_for
from tests.pipeline.sync_helpers import add_repositories, connect

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_real_stage_runs_to_complete_and_the_admins_get_the_email(
    start_worker, team, admin_user, demo_github_small, llm_server, smtp_sink, capsys
):
    connect(team, demo_github_small)
    repositories = add_repositories(team, demo_github_small)
    start_worker(
        {
            **smtp_sink.worker_env(),
            "TEST_OPENAI_API_KEY": "sk-local-test",
            "TEST_OPENAI_BASE_URL": llm_server.base_url,
        }
    )

    call_command("pipeline", "start", "--team", team.name)
    run = PipelineRun.objects.get(team=team)

    def complete() -> bool:
        team.refresh_from_db()
        return team.pipeline_status == PipelineStatus.COMPLETE

    wait_for(complete, timeout=120)
    [message] = smtp_sink.wait_for_messages(1)

    assert [a.stage for a in run.attempts.order_by("started_at")] == list(STAGE_ORDER)
    synced = PullRequest.objects.filter(team=team).count()
    assert synced > 0
    assert AIVerdict.objects.filter(team=team).count() == synced
    assert AIVerdict.objects.filter(team=team, is_ai_assisted=True).exists()
    # PRs the signatures did not settle went to the LLM.
    assert llm_server.completions()
    assert AIVerdict.objects.filter(team=team).exclude(llm_assisted=None).exists()
    assert WeeklyMetric.objects.filter(team=team, member_login="").exists()
    assert Insight.objects.filter(team=team, run=run).exists()
    assert EmailOutbox.objects.get(run=run).status == EmailOutbox.Status.SENT
    assert message["To"] == admin_user.email
    assert "insights" in message["Subject"].lower()
    assert len(repositories) == len(run.repository_ids)

    call_command("pipeline", "status", "--team", team.name)
    status_output = capsys.readouterr().out
    assert "complete" in status_output and "computing_insights" in status_output
    wait_for(lambda: not find_drift())
