"""The completion e-mail ("your insights are ready"), sent from the outbox exactly once per run.

The outbox row is written in the pipeline's final hand-off transaction (``pipeline.transitions``)
and sent by its own job (``pipeline.tasks.send_email``): a provider failure never fails the
pipeline, it is recorded on the row for staff, who can re-send it from the admin.
"""

from __future__ import annotations

import logging
import smtplib

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from onboarding.models import Membership
from pipeline import queue
from pipeline.models import EmailOutbox, Insight, PipelineRun
from pipeline.scope import AI_SHARE_LABEL, Scope

logger = logging.getLogger(__name__)

# Insights listed under the top one in the e-mail; the dashboard has them all.
MORE_INSIGHTS = 3


def email_context(run: PipelineRun) -> dict:
    """The numbers the e-mail states: the run's scope (``pipeline.scope``), counted exactly as
    the dashboard counts them (the e-mail is written for the run that just completed, which is
    the one the dashboard then shows)."""
    scope = Scope.of_run(run)
    totals = scope.frozen_totals()
    insights = list(Insight.objects.filter(run=run).order_by("position", "id")[: 1 + MORE_INSIGHTS])
    return {
        "team": run.team,
        "run": run,
        "repositories": scope.repository_names(),
        "window_start": scope.start,
        "window_end": scope.end,
        "prs_analysed": totals.prs,
        "prs_merged": totals.merged,
        "ai_prs": totals.ai_merged,
        "ai_share_label": AI_SHARE_LABEL,
        # A whole percentage, or None when nothing was merged (the template says so).
        "ai_share_percent": totals.ai_share_percent,
        "top_insight": insights[0] if insights else None,
        "more_insights": insights[1:],
        "site_url": settings.SITE_URL,
        "dashboard_url": f"{settings.SITE_URL}/dashboard/",
    }


def build_message(outbox: EmailOutbox) -> EmailMultiAlternatives:
    context = email_context(outbox.run)
    subject = f"Your tformance insights for {outbox.team.name} are ready"
    text = render_to_string("emails/insights_ready.txt", context)
    html = render_to_string("emails/insights_ready.html", context)
    message = EmailMultiAlternatives(
        subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=outbox.recipients
    )
    message.attach_alternative(html, "text/html")
    # Read by anymail's provider backends (tagging and metadata in the provider's dashboard);
    # Django's own backends ignore them.
    message.tags = ["insights-ready"]
    message.metadata = {"team_id": str(outbox.team_id), "run_id": str(outbox.run_id)}
    return message


def describe_error(exc: BaseException) -> str:
    """The provider's own words for staff: SMTP reply codes and texts rather than byte reprs.
    (Provider replies carry no credentials; the exception never includes our password.)"""
    name = exc.__class__.__name__
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        refused = "; ".join(
            f"{address}: {code} {_text(reply)}" for address, (code, reply) in exc.recipients.items()
        )
        return f"{name}: {refused}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{name}: {exc.smtp_code} {_text(exc.smtp_error)}"
    return f"{name}: {exc}"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def send_outbox(outbox_id: int, *, final_attempt: bool) -> None:
    """Send the outbox row's e-mail unless it was already sent. A provider error is recorded on
    the row and raised again after commit, so procrastinate retries; after the final attempt the
    row is marked failed for staff to see and re-queue (the pipeline stays complete)."""
    error = ""
    with transaction.atomic():
        outbox = (
            EmailOutbox.objects.select_for_update().select_related("team", "run").get(pk=outbox_id)
        )
        if outbox.status == EmailOutbox.Status.SENT:
            return
        outbox.run.team = outbox.team  # one row, already read: the e-mail names the team
        outbox.attempts += 1
        # The team's admins now, not when the run completed: an admin added since gets it, one
        # removed since does not. The row keeps the list actually used (saved with the outcome,
        # in the same transaction).
        outbox.recipients = admin_recipients(outbox.team_id)
        if not outbox.recipients:
            outbox.status = EmailOutbox.Status.FAILED
            outbox.error = "The team has no admin with an e-mail address."
            outbox.save(update_fields=["recipients", "attempts", "status", "error"])
            error = outbox.error
        else:
            error = _send(outbox, final_attempt=final_attempt)
    if error:
        # Raised after the commit above, so the recorded error survives, and the job ends
        # failed: staff can re-queue it from the admin.
        raise EmailNotSent(error)


def resend(outbox_id: int) -> bool:
    """Queue the outbox's e-mail again in a new job (a full retry budget; re-queueing the old
    job would inherit its spent attempts counter). False when it was already sent."""
    with transaction.atomic():
        outbox = EmailOutbox.objects.select_for_update().get(pk=outbox_id)
        if outbox.status == EmailOutbox.Status.SENT:
            return False
        outbox.status = EmailOutbox.Status.PENDING
        outbox.job_id = queue.defer(queue.EMAIL_JOB, outbox_id=outbox.pk)
        outbox.save(update_fields=["status", "job_id"])
        return True


def admin_recipients(team_id: int) -> list[str]:
    """The e-mail addresses of the team's admins: who gets "your insights are ready"."""
    return list(
        Membership.objects.filter(team_id=team_id, role=Membership.Role.ADMIN)
        .exclude(user__email="")
        .order_by("user__email")
        .values_list("user__email", flat=True)
    )


def _send(outbox: EmailOutbox, *, final_attempt: bool) -> str:
    """Send and record the outcome on the (locked) row; returns the error text, if any."""
    error = ""
    try:
        # Sent while holding the row lock: a concurrent re-queue of the same row waits and
        # then sees SENT, so the e-mail goes out once.
        build_message(outbox).send()
    except Exception as exc:
        logger.warning("e-mail for run %s failed: %s", outbox.run_id, exc.__class__.__name__)
        outbox.error = describe_error(exc)[:1000]
        outbox.status = EmailOutbox.Status.FAILED if final_attempt else EmailOutbox.Status.PENDING
        outbox.save(update_fields=["recipients", "attempts", "status", "error"])
        error = outbox.error
    else:
        outbox.status = EmailOutbox.Status.SENT
        outbox.sent_at = timezone.now()
        outbox.error = ""
        outbox.save(update_fields=["recipients", "attempts", "status", "error", "sent_at"])
    return error


class EmailNotSent(Exception):
    pass
