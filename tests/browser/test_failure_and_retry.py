"""A pipeline that fails shows why, live, with a Retry button that resumes it: in a real
Chromium, against a real worker and the demo GitHub revoking the token mid-way."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from onboarding import crypto
from onboarding.models import GitHubConnection, Membership, Team

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "a long enough passphrase"


@pytest.fixture
def connected_member(transactional_db, demo_github_small):
    """A team already connected to the demo GitHub (created before the browser starts: Django's
    ORM and Playwright's sync loop do not share a thread happily)."""
    team = Team.objects.create(name="Retry Co")
    user = get_user_model().objects.create_user("rita", "rita@example.com", PASSWORD)
    Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    GitHubConnection.objects.create(
        team=team,
        kind=GitHubConnection.Kind.DEMO,
        encrypted_token=crypto.encrypt_token(demo_github_small.token),
        api_url=demo_github_small.api_url,
        account_login="demo-lead",
    )
    return user


def test_failed_sync_shows_the_reason_live_and_retry_resumes(
    connected_member, asgi_server, start_worker, demo_github_small, browser_page, screenshot
):
    demo = demo_github_small
    worker = start_worker()
    page = browser_page
    base = asgi_server.url

    # GitHub refuses the token while the repository list loads: the page says why, and its
    # Retry button loads the list once GitHub accepts it again.
    demo.unauthorized()
    page.goto(f"{base}/")
    page.wait_for_url(f"{base}/accounts/login/?next=/")
    page.fill("#id_username", "rita")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    # Home knows the team is connected and sends it to the repository step.
    page.wait_for_url(f"{base}/repositories/")
    fetch_error = page.locator(".fetch-error")
    fetch_error.wait_for(state="visible")
    assert "reconnect GitHub" in fetch_error.inner_text()
    assert "could not be reached" not in fetch_error.inner_text()
    screenshot("10-repositories-fetch-failed")
    demo.unauthorized(False)
    fetch_error.locator("text=Retry").click()
    page.locator("input[name=repository]").first.wait_for(state="visible")
    assert page.locator(".fetch-error").count() == 0
    page.check("#select-all")

    # The token is revoked between listing and syncing.
    demo.unauthorized()
    page.click("#start-button")
    page.wait_for_url(f"{base}/progress/")
    page.evaluate("window.__sameDocument = 'yes'")
    error = page.locator(".pipeline-progress__error")
    try:
        error.wait_for(state="visible", timeout=60_000)
    except Exception:
        pytest.fail(f"no failure shown\n{worker.log()[-3000:]}")
    assert "GitHub rejected the team's token" in error.inner_text()
    # The failure leads somewhere: a visible link to the connection page, next to Retry.
    reconnect = error.locator("[data-reconnect]")
    assert reconnect.is_visible()
    assert reconnect.get_attribute("href") == "/github/"
    assert page.locator(".pipeline-progress__error .member-only").is_hidden()
    assert page.locator("[data-stage=syncing]").get_attribute("data-state") == "failed"
    # The failure arrived live, on the page as it was first loaded.
    assert page.evaluate("window.__sameDocument") == "yes"
    screenshot("11-progress-failed")

    demo.unauthorized(False)
    page.click(".pipeline-progress__error button[type=submit]")
    page.wait_for_url(f"{base}/progress/")
    done = page.locator(".pipeline-progress__done")
    try:
        done.wait_for(state="visible", timeout=120_000)
    except Exception:
        pytest.fail(f"the retried pipeline did not complete\n{worker.log()[-3000:]}")
    states = page.eval_on_selector_all("[data-stage]", "nodes => nodes.map(n => n.dataset.state)")
    assert states == ["done"] * len(states)
    # Two attempts of the sync stage: the failed one and the retry, shown on the stage.
    assert "attempt 2" in page.locator("[data-stage=syncing]").inner_text()
    screenshot("12-progress-retried-complete")
