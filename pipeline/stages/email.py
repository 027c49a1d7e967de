"""The completion e-mail, sent from the outbox exactly once per run."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from pipeline.models import EmailOutbox

logger = logging.getLogger(__name__)


def build_message(outbox: EmailOutbox) -> EmailMultiAlternatives:
    context = {"team": outbox.team, "run": outbox.run, "site_url": settings.SITE_URL}
    subject = f"Your tformance insights for {outbox.team.name} are ready"
    text = render_to_string("emails/insights_ready.txt", context)
    html = render_to_string("emails/insights_ready.html", context)
    message = EmailMultiAlternatives(
        subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=outbox.recipients
    )
    message.attach_alternative(html, "text/html")
    return message


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
        outbox.attempts += 1
        if not outbox.recipients:
            outbox.status = EmailOutbox.Status.FAILED
            outbox.error = "The team has no admin with an e-mail address."
            outbox.save(update_fields=["attempts", "status", "error"])
            return
        try:
            # Sent while holding the row lock: a concurrent re-queue of the same row waits and
            # then sees SENT, so the e-mail goes out once.
            build_message(outbox).send()
        except Exception as exc:
            logger.warning("e-mail for run %s failed: %s", outbox.run_id, exc.__class__.__name__)
            outbox.error = f"{exc.__class__.__name__}: {exc}"[:1000]
            outbox.status = (
                EmailOutbox.Status.FAILED if final_attempt else EmailOutbox.Status.PENDING
            )
            outbox.save(update_fields=["attempts", "status", "error"])
            error = outbox.error
        else:
            outbox.status = EmailOutbox.Status.SENT
            outbox.sent_at = timezone.now()
            outbox.error = ""
            outbox.save(update_fields=["attempts", "status", "error", "sent_at"])
    if error:
        # Raised after the commit above, so the recorded error survives.
        raise EmailNotSent(error)


class EmailNotSent(Exception):
    pass
