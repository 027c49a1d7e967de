"""The completion e-mail through a real SMTP server on 127.0.0.1 and through anymail's test
backend: who gets it, what it says, exactly once, and what a failing provider leaves behind."""

from __future__ import annotations

import datetime
import socket
import threading
from typing import ClassVar

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection
from django.test import override_settings
from procrastinate.contrib.django.models import ProcrastinateJob

from onboarding.models import Membership, Team
from pipeline import transitions
from pipeline.admin_jobs import requeue_jobs
from pipeline.models import EmailOutbox, Insight, PipelineRun
from pipeline.stages import email as email_stage
from pipeline.stages import insights, metrics
from pipeline.status import STAGE_ORDER, PipelineStatus
from tests.conftest import test_database_url, wait_for
from tests.pipeline.prs import make_pr, run_start_after_history

SITE_URL = "https://tformance.example"
TEAM_NAME = "Ada & Grace's team"
RECENT = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(days=10)


def add_user(team, username: str, email: str, role: str) -> None:
    user = get_user_model().objects.create_user(username=username, email=email, password="x")
    Membership.objects.create(team=team, user=user, role=role)


def job_has_failed(job_id: int) -> bool:
    return ProcrastinateJob.objects.filter(id=job_id, status="failed").exists()


@pytest.fixture
def team_with_history(team, admin_user, repositories):
    """Two admins with an address, one without, a plain member; 12 PRs in the two selected
    repositories (3 AI-assisted) and one in a repository the run leaves out."""
    team.name = TEAM_NAME
    team.save(update_fields=["name"])
    add_user(team, "grace", "grace@example.com", Membership.Role.ADMIN)
    add_user(team, "nomail", "", Membership.Role.ADMIN)
    add_user(team, "bob", "bob@example.com", Membership.Role.MEMBER)
    for number in range(1, 13):
        # Recent, so a run started now (by a worker test) has them in its window.
        created = RECENT + datetime.timedelta(hours=number)
        make_pr(
            repositories[number % 2],
            number,
            created=created,
            merged=created + datetime.timedelta(hours=5),
            ai=number <= 3,
            tools=["Claude Code"],
        )
    make_pr(repositories[2], 99, created=RECENT, ai=True)
    return team


def finish_pipeline(team, repositories) -> PipelineRun:
    """Run the pipeline in this process: sync and detect are already done by the fixture's rows;
    metrics and insights are the real stages. The last hand-off writes the outbox row."""
    run = transitions.start_pipeline(team, [r.pk for r in repositories[:2]])
    # The fixture's dates, not today's, decide the run's window.
    PipelineRun.objects.filter(pk=run.pk).update(started_at=run_start_after_history(team))
    for stage in STAGE_ORDER:
        attempt = transitions.begin_stage(run.pk, stage, job_id=None)
        counts = {}
        if stage == PipelineStatus.COMPUTING_METRICS:
            counts = metrics.run(attempt.run)
        elif stage == PipelineStatus.COMPUTING_INSIGHTS:
            counts = insights.run(attempt.run)
        transitions.complete_stage(attempt.pk, counts)
    run.refresh_from_db()
    return run


def text_and_html(message) -> tuple[str, str]:
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


@pytest.mark.django_db
def test_admins_get_a_multipart_email_with_the_runs_real_numbers_over_smtp(
    smtp_sink, team_with_history, repositories
):
    run = finish_pipeline(team_with_history, repositories)
    outbox = EmailOutbox.objects.get(run=run)
    top = Insight.objects.filter(run=run).order_by("position").first()

    with override_settings(SITE_URL=SITE_URL, **smtp_sink.django_settings()):
        email_stage.send_outbox(outbox.pk, final_attempt=False)

    [message] = smtp_sink.wait_for_messages(1)
    # Admins with an address only: not the plain member, not the admin without an address.
    assert sorted(smtp_sink.envelopes[0].rcpt_tos) == ["ada@example.com", "grace@example.com"]
    assert message["Subject"] == f"Your tformance insights for {TEAM_NAME} are ready"
    text, html = text_and_html(message)
    assert "We analysed 12 pull requests opened or merged between " in text
    assert " in 2 repositories: acme/repo-0, acme/repo-1." in text
    assert "AI-assisted share of merged PRs: 25% (3 of 12 merged PRs)." in text
    assert f"Top insight: {top.headline}" in text
    assert f"Open your dashboard: {SITE_URL}/dashboard/" in text
    # Plain text is not HTML-escaped; the HTML body is.
    assert f"admin of {TEAM_NAME} on tformance" in text
    assert "Ada &amp; Grace&#x27;s team" in html
    assert "25%</strong>" in html
    assert "3 of 12 merged PRs" in html
    assert top.headline in html
    assert f'href="{SITE_URL}/dashboard/"' in html
    outbox.refresh_from_db()
    assert (outbox.status, outbox.attempts, outbox.error) == (EmailOutbox.Status.SENT, 1, "")
    assert outbox.sent_at is not None


@pytest.mark.django_db
def test_anymail_backend_sends_both_bodies_with_tags_and_run_metadata(
    team_with_history, repositories
):
    run = finish_pipeline(team_with_history, repositories)
    outbox = EmailOutbox.objects.get(run=run)

    with override_settings(EMAIL_BACKEND="anymail.backends.test.EmailBackend"):
        email_stage.send_outbox(outbox.pk, final_attempt=False)

    [message] = mail.outbox
    assert sorted(message.to) == ["ada@example.com", "grace@example.com"]
    assert "AI-assisted share of merged PRs: 25% (3 of 12 merged PRs)." in message.body
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html" and "25%</strong>" in html
    assert message.anymail_test_params["tags"] == ["insights-ready"]
    assert message.anymail_test_params["metadata"] == {
        "team_id": str(run.team_id),
        "run_id": str(run.pk),
    }
    assert message.anymail_status.status == {"sent"}
    assert EmailOutbox.objects.get(pk=outbox.pk).status == EmailOutbox.Status.SENT


@pytest.mark.django_db
def test_sending_the_same_outbox_twice_sends_one_message(
    smtp_sink, team_with_history, repositories
):
    outbox = EmailOutbox.objects.get(run=finish_pipeline(team_with_history, repositories))

    with override_settings(**smtp_sink.django_settings()):
        email_stage.send_outbox(outbox.pk, final_attempt=False)
        email_stage.send_outbox(outbox.pk, final_attempt=False)

    assert len(smtp_sink.wait_for_messages(1)) == 1
    outbox.refresh_from_db()
    assert (outbox.status, outbox.attempts) == (EmailOutbox.Status.SENT, 1)


@pytest.mark.django_db(transaction=True)
def test_two_jobs_sending_one_outbox_at_once_send_one_message(
    smtp_sink, team_with_history, repositories
):
    outbox = EmailOutbox.objects.get(run=finish_pipeline(team_with_history, repositories))
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            start.wait()
            email_stage.send_outbox(outbox.pk, final_attempt=False)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    with override_settings(**smtp_sink.django_settings()):
        threads = [threading.Thread(target=send) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)

    assert errors == []
    assert len(smtp_sink.messages) == 1
    assert EmailOutbox.objects.get(pk=outbox.pk).attempts == 1


class LockProbingBackend(BaseEmailBackend):
    """A provider that, while it holds the message, tries to lock rows from another connection
    the way a concurrent transition (the team's next run, a rescue) or a second send would."""

    rows: ClassVar[dict[str, int]] = {}
    seen: ClassVar[dict[str, str]] = {}

    def send_messages(self, email_messages):
        with psycopg.connect(test_database_url()) as other:
            for table, pk in self.rows.items():
                try:
                    other.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE NOWAIT", [pk])
                    self.seen[table] = "free"
                except psycopg.errors.LockNotAvailable:
                    self.seen[table] = "locked"
                other.rollback()
        return len(email_messages)


@pytest.mark.django_db(transaction=True)
def test_a_slow_provider_holds_only_the_outbox_row_not_the_team_or_run(
    team_with_history, repositories
):
    run = finish_pipeline(team_with_history, repositories)
    LockProbingBackend.rows = {
        "pipeline_emailoutbox": run.email.pk,
        "onboarding_team": run.team_id,
        "pipeline_pipelinerun": run.pk,
    }
    LockProbingBackend.seen = {}

    with override_settings(EMAIL_BACKEND=f"{__name__}.LockProbingBackend"):
        email_stage.send_outbox(run.email.pk, final_attempt=False)

    # The outbox row stays locked through the send (a second send waits, then sees it sent);
    # the team's transitions and the run's row are not held up by the provider.
    assert LockProbingBackend.seen == {
        "pipeline_emailoutbox": "locked",
        "onboarding_team": "free",
        "pipeline_pipelinerun": "free",
    }
    run.email.refresh_from_db()
    assert run.email.status == EmailOutbox.Status.SENT


@pytest.mark.django_db
def test_a_rejecting_provider_is_recorded_and_the_message_is_not_lost(
    smtp_sink, team_with_history, repositories
):
    run = finish_pipeline(team_with_history, repositories)
    outbox = EmailOutbox.objects.get(run=run)
    smtp_sink.reject = "550 5.7.1 Sender blocked by policy"

    with override_settings(**smtp_sink.django_settings()):
        with pytest.raises(email_stage.EmailNotSent):
            email_stage.send_outbox(outbox.pk, final_attempt=False)
        outbox.refresh_from_db()
        # A retry is still to come: pending, with the provider's own words recorded.
        assert outbox.status == EmailOutbox.Status.PENDING
        assert outbox.error == "SMTPDataError: 550 5.7.1 Sender blocked by policy"

        with pytest.raises(email_stage.EmailNotSent):
            email_stage.send_outbox(outbox.pk, final_attempt=True)
        outbox.refresh_from_db()
        assert (outbox.status, outbox.attempts) == (EmailOutbox.Status.FAILED, 2)

        run.refresh_from_db()
        run.team.refresh_from_db()
        assert run.state == PipelineRun.State.COMPLETE
        assert run.team.pipeline_status == PipelineStatus.COMPLETE
        assert smtp_sink.messages == [] and smtp_sink.refused == 2

        # Staff re-send once the provider accepts again: it goes out, once.
        smtp_sink.reject = None
        email_stage.send_outbox(outbox.pk, final_attempt=True)

    assert len(smtp_sink.wait_for_messages(1)) == 1
    outbox.refresh_from_db()
    assert (outbox.status, outbox.attempts, outbox.error) == (EmailOutbox.Status.SENT, 3, "")


@pytest.mark.django_db
def test_an_unreachable_provider_is_recorded_on_the_outbox(team_with_history, repositories):
    outbox = EmailOutbox.objects.get(run=finish_pipeline(team_with_history, repositories))
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=closed_port,
    ):
        with pytest.raises(email_stage.EmailNotSent):
            email_stage.send_outbox(outbox.pk, final_attempt=True)

    outbox.refresh_from_db()
    assert outbox.status == EmailOutbox.Status.FAILED
    assert outbox.error.startswith("ConnectionRefusedError")


@pytest.mark.django_db
def test_a_team_with_no_prs_gets_an_email_that_says_so(smtp_sink, team, admin_user, repositories):
    outbox = EmailOutbox.objects.get(run=finish_pipeline(team, repositories))

    with override_settings(**smtp_sink.django_settings()):
        email_stage.send_outbox(outbox.pk, final_attempt=False)

    text, _ = text_and_html(smtp_sink.wait_for_messages(1)[0])
    assert "We analysed 0 pull requests opened or merged between " in text
    assert " in 2 repositories" in text
    assert "No pull request was merged in this period" in text
    assert "Top insight: No pull requests to analyse yet" in text


@pytest.mark.django_db(transaction=True)
def test_a_rejected_email_sent_by_a_worker_is_resent_from_the_admin_once_accepted(
    start_worker, smtp_sink, team_with_history, repositories
):
    """End to end with a real worker: real metrics and insights stages, the outbox job, a
    provider that refuses, then the admin's re-send once it accepts."""
    quick = "tests.pipeline.fault_stages.quick"
    start_worker(
        {
            **smtp_sink.worker_env(),
            "PIPELINE_STAGE_OVERRIDES": (
                f"{PipelineStatus.SYNCING}={quick},{PipelineStatus.LLM_PROCESSING}={quick}"
            ),
            "PIPELINE_STAGE_MAX_RETRIES": "0",
            "SITE_URL": SITE_URL,
        }
    )
    smtp_sink.reject = "550 5.7.1 Sender blocked by policy"
    run = transitions.start_pipeline(team_with_history, [r.pk for r in repositories[:2]])

    outbox = wait_for(
        lambda: EmailOutbox.objects.filter(run=run, status=EmailOutbox.Status.FAILED).first()
    )
    assert "550 5.7.1 Sender blocked by policy" in outbox.error
    run.refresh_from_db()
    assert run.state == PipelineRun.State.COMPLETE
    assert smtp_sink.messages == []

    smtp_sink.reject = None
    wait_for(lambda: job_has_failed(outbox.job_id))  # procrastinate records the job's end
    [result] = requeue_jobs(ProcrastinateJob.objects.filter(id=outbox.job_id))
    assert result.succeeded, result.message

    [message] = smtp_sink.wait_for_messages(1)
    wait_for(lambda: EmailOutbox.objects.get(pk=outbox.pk).status == EmailOutbox.Status.SENT)
    text, _ = text_and_html(message)
    assert "AI-assisted share of merged PRs: 25% (3 of 12 merged PRs)." in text
    top = Insight.objects.filter(run=run).order_by("position").first()
    assert f"Top insight: {top.headline}" in text
    assert f"{SITE_URL}/dashboard/" in text


@pytest.mark.django_db(transaction=True)
def test_a_provider_configured_from_the_environment_gets_the_email_after_a_rejection(
    start_worker, postmark_server, team_with_history, repositories
):
    """anymail's Postmark backend, configured only by environment variables, in a real worker
    against a local server speaking Postmark's API: the refusal is recorded without the token,
    the re-send delivers both bodies."""
    quick = "tests.pipeline.fault_stages.quick"
    worker = start_worker(
        {
            **postmark_server.worker_env(),
            "PIPELINE_STAGE_OVERRIDES": (
                f"{PipelineStatus.SYNCING}={quick},{PipelineStatus.LLM_PROCESSING}={quick}"
            ),
            "PIPELINE_STAGE_MAX_RETRIES": "0",
        }
    )
    postmark_server.reject = True
    run = transitions.start_pipeline(team_with_history, [r.pk for r in repositories[:2]])

    outbox = wait_for(
        lambda: EmailOutbox.objects.filter(run=run, status=EmailOutbox.Status.FAILED).first()
    )
    assert "Invalid 'From' address" in outbox.error
    assert postmark_server.TOKEN not in outbox.error
    assert Team.objects.get(pk=run.team_id).pipeline_status == PipelineStatus.COMPLETE

    postmark_server.reject = False
    wait_for(lambda: job_has_failed(outbox.job_id))
    [result] = requeue_jobs(ProcrastinateJob.objects.filter(id=outbox.job_id))
    assert result.succeeded, result.message
    wait_for(lambda: EmailOutbox.objects.get(pk=outbox.pk).status == EmailOutbox.Status.SENT)

    accepted = postmark_server.requests[-1]
    assert len(postmark_server.requests) == 2
    assert accepted["token"] == postmark_server.TOKEN
    sent = accepted["json"]
    assert sorted(address.strip() for address in sent["To"].split(",")) == [
        "ada@example.com",
        "grace@example.com",
    ]
    assert sent["Subject"] == f"Your tformance insights for {TEAM_NAME} are ready"
    assert "AI-assisted share of merged PRs: 25% (3 of 12 merged PRs)." in sent["TextBody"]
    assert "25%</strong>" in sent["HtmlBody"]
    assert sent["Tag"] == "insights-ready"
    assert sent["Metadata"] == {"team_id": str(run.team_id), "run_id": str(run.pk)}
    assert postmark_server.TOKEN not in worker.log()
