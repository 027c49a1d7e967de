"""The whole onboarding in a real Chromium: sign up, connect the demo organisation, pick
repositories, watch the pipeline advance live (no reload), reach the dashboard's charts.

Everything is real: uvicorn serving the ASGI app, a procrastinate worker process running the
real stages, the bundled demo GitHub over HTTP, Postgres LISTEN/NOTIFY feeding the SSE stream.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from onboarding.models import Team
from pipeline.status import PipelineStatus

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def stage_states(page) -> dict[str, str]:
    return page.eval_on_selector_all(
        "[data-stage]",
        "nodes => Object.fromEntries(nodes.map(n => [n.dataset.stage, n.dataset.state]))",
    )


def team_status(name: str) -> str:
    # With Playwright's loop running in this thread, Django gives this code its own connection
    # (connections are context-local); close it, or it outlives the test database.
    try:
        return Team.objects.get(name=name).pipeline_status
    finally:
        connection.close()


def test_sign_up_to_dashboard_with_live_progress(
    asgi_server, start_worker, demo_github_small, settings, browser_page, screenshot
):
    demo = demo_github_small
    settings.DEMO_GITHUB_URL = demo.api_url
    settings.DEMO_GITHUB_TOKEN = demo.token
    worker = start_worker()
    page = browser_page
    base = asgi_server.url

    # 1. Sign up: the first user of a new team is its admin.
    page.goto(f"{base}/accounts/signup/")
    page.fill("#id_username", "grace")
    page.fill("#id_email", "grace@example.com")
    page.fill("#id_password1", "a long enough passphrase")
    page.fill("#id_password2", "a long enough passphrase")
    page.fill("#id_team_name", "Compilers")
    screenshot("01-signup")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/github/")

    # 2. Connect the demo organisation. The demo answers slowly for a moment, so the repository
    # page is seen with its loading indicator before the list arrives.
    screenshot("02-connect-github")
    demo.slow(1.5)
    page.click("text=Use the demo organisation")
    page.wait_for_url(f"{base}/repositories/")
    loading = page.locator(".loading")
    loading.wait_for(state="visible")
    screenshot("03-repositories-loading")
    demo.slow(0)
    page.locator("input[name=repository]").first.wait_for(state="visible", timeout=30_000)
    assert not loading.is_visible()
    boxes = page.locator("input[name=repository]")
    assert boxes.count() >= 2

    # Filter, select all of what is shown, and the count follows; then every repository.
    first_name = page.locator(".repo-name").first.inner_text()
    page.fill("#repository-filter", first_name)
    page.check("#select-all")
    assert page.inner_text("#selected-count") == "1 selected"
    assert page.locator("li:not([hidden]) input[name=repository]").count() == 1
    page.fill("#repository-filter", "")
    page.check("#select-all")
    assert page.inner_text("#selected-count") == f"{boxes.count()} selected"
    screenshot("04-repositories-selected")

    # 3. Start, then watch the stages advance without reloading the page.
    page.click("#start-button")
    page.wait_for_url(f"{base}/progress/")
    page.evaluate("window.__sameDocument = 'yes'")
    page.locator("#progress-live").wait_for()
    # The page listens to the server-sent events stream (not the polling fallback).
    page.wait_for_function("document.getElementById('progress-live').dataset.live === 'on'")
    seen: list[dict[str, str]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        # Done is read before the states: a swap in between then shows up as one more state.
        done = page.locator(".pipeline-progress__done").count() > 0
        states = stage_states(page)
        if not seen or states != seen[-1]:
            seen.append(states)
            if len(seen) == 2:
                screenshot("05-progress-running")
        if done:
            break
        if page.locator(".pipeline-progress__error").count():
            pytest.fail(
                "the pipeline failed: "
                + page.inner_text(".pipeline-progress__error")
                + "\n"
                + worker.log()[-3000:]
            )
        time.sleep(0.05)
    else:
        pytest.fail(f"the pipeline did not complete; states seen: {seen}\n{worker.log()[-3000:]}")
    # The finished state, reached live: the stepper on "Insights", the heading changed, and
    # the page stays (it does not navigate by itself; the README says so).
    page.wait_for_function("document.getElementById('progress-page').dataset.finished === 'true'")
    assert page.inner_text("#progress-steps .steps li.current") == "Insights"
    assert page.locator("#progress-steps .steps li.done").count() == 3
    assert page.inner_text("#progress-heading") == "Insights ready for Compilers"
    assert page.title().startswith("Insights ready")
    assert page.locator("[data-cancel]").count() == 0
    screenshot("06-progress-complete")
    # Still the same document: every change arrived through the stream, not a reload.
    assert page.evaluate("window.__sameDocument") == "yes"
    assert page.url == f"{base}/progress/"
    # The page showed more than start and end: stages moved one after another while we watched.
    assert len(seen) >= 3, seen
    assert all(state == "done" for state in seen[-1].values()), seen[-1]
    assert team_status("Compilers") == PipelineStatus.COMPLETE

    # 4. The dashboard and its charts.
    page.click("text=Open the dashboard")
    page.wait_for_url(f"{base}/dashboard/")
    charts = page.locator("svg.chart")
    assert charts.count() == 3
    for index in range(3):
        assert charts.nth(index).is_visible()
        assert charts.nth(index).locator("rect, polyline").count() > 0
    assert page.locator(".pr-table tbody tr").count() > 0
    screenshot("07-dashboard")
    screenshot("08-dashboard-full", full_page=True)
    page.locator("#pr-table").screenshot(path=str(screenshot.folder / "09-dashboard-pr-table.png"))
