"""Staff in a real Chromium: a job whose worker was SIGKILLed is found with the Stalled filter
and re-queued with a reason, its run completes on a new worker, and the audit log shows the
action; the live operations page updates by itself when a pipeline advances."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from onboarding.models import Repository, Team
from pipeline import transitions
from pipeline.models import PipelineRun, StageAttempt
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import finish_stages, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "a long enough passphrase"
QUICK = "tests.pipeline.fault_stages.quick"
SLOW = "tests.pipeline.fault_stages.slow_first_attempt"


@pytest.fixture
def staff_and_team(transactional_db):
    get_user_model().objects.create_superuser("olga", "olga@example.com", PASSWORD)
    team = Team.objects.create(name="Stalled Co")
    repository = Repository.objects.create(team=team, github_id=7, full_name="stalled/api")
    return team, repository


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}/admin/")


def test_staff_find_a_stalled_job_requeue_it_and_the_audit_log_shows_why(
    staff_and_team, asgi_server, start_worker, browser_page, screenshot
):
    team, repository = staff_and_team
    overrides = [f"{PipelineStatus.SYNCING}={SLOW}"] + [
        f"{stage}={QUICK}" for stage in STAGE_ORDER[1:]
    ]
    env = {"PIPELINE_STAGE_OVERRIDES": ",".join(overrides)}
    worker = start_worker(env)
    run = transitions.start_pipeline(team, [repository.pk])
    wait_for(
        lambda: StageAttempt.objects.filter(run=run, outcome=StageAttempt.Outcome.RUNNING).exists(),
        timeout=60,
    )
    worker.kill()  # SIGKILL mid-stage: the job stays "doing" with a dead worker

    page, base = browser_page, asgi_server.url
    log_in(page, base)
    stalled_list = f"{base}/admin/procrastinate/procrastinatejob/?liveness=stalled"

    def stalled_row_shown() -> bool:
        page.goto(stalled_list)
        return page.locator("#result_list tbody tr").count() == 1

    # Stalled once the worker's death is detected (heartbeat rule: up to a minute).
    wait_for(stalled_row_shown, timeout=120, interval=2)
    row = page.locator("#result_list tbody tr")
    assert "Stalled" in row.inner_text()
    assert "Stalled Co" in row.inner_text()
    screenshot("40-admin-stalled-job")

    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "requeue")
    page.click("button[name=index]")
    page.fill("#id_reason", "worker host vm-3 was lost")
    page.click("input[type=submit][value^='Re-queue']")
    message = page.locator("ul.messagelist li").first
    message.wait_for(state="visible")
    assert "stalled, re-queued" in message.inner_text()
    screenshot("41-admin-requeued")

    start_worker(env)
    wait_for(
        lambda: PipelineRun.objects.get(pk=run.pk).state == PipelineRun.State.COMPLETE,
        timeout=90,
    )

    page.goto(f"{base}/admin/pipeline/staffaction/")
    audit = page.locator("#result_list tbody tr").first
    assert "worker host vm-3 was lost" in audit.inner_text()
    assert "olga" in audit.inner_text() and "requeue" in audit.inner_text()
    screenshot("42-admin-audit-log")


def test_the_operations_page_updates_when_a_pipeline_advances(
    staff_and_team, asgi_server, browser_page, screenshot, empty_queue_after
):
    team, repository = staff_and_team
    page, base = browser_page, asgi_server.url
    log_in(page, base)
    page.goto(f"{base}/admin/operations/")
    page.wait_for_selector("#ops-connection[data-live=on]")
    page.evaluate("window.__sameDocument = 'yes'")
    assert page.locator("#ops-running").inner_text() == "0"

    run = transitions.start_pipeline(team, [repository.pk])
    page.wait_for_function("document.getElementById('ops-running').textContent === '1'")
    finish_stages(run, [PipelineStatus.SYNCING])
    syncing = page.locator(f"tr[data-stage={PipelineStatus.SYNCING}] .ops-attempts")
    page.wait_for_function(
        f"document.querySelector('tr[data-stage={PipelineStatus.SYNCING}] .ops-attempts')"
        ".textContent === '1'"
    )

    assert syncing.inner_text() == "1"
    page.wait_for_function(
        "document.querySelector('tr[data-queue=llm] .ops-waiting')?.textContent === '1'"
    )
    assert page.evaluate("window.__sameDocument") == "yes"  # pushed, not reloaded
    screenshot("43-admin-operations-live")
