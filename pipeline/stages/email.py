"""The completion e-mail ("your insights are ready"), sent from the outbox exactly once per run.

The outbox row is written in the pipeline's final hand-off transaction (``pipeline.transitions``)
and sent by its own job (``pipeline.tasks.send_email``): a provider failure never fails the
pipeline, it is recorded on the row for staff, who can re-send it from the admin.
"""

from __future__ import annotations

import functools
import logging
import smtplib
import weakref
from dataclasses import dataclass

import psycopg.errors
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import DatabaseError, connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone
from psycopg.types.json import Jsonb

from onboarding.models import Membership, Repository, Team
from pipeline import queue
from pipeline.models import EmailOutbox, Insight, PipelineRun, from_row
from pipeline.scope import AI_SHARE_LABEL, Scope

logger = logging.getLogger(__name__)

# Insights listed under the top one in the e-mail; the dashboard has them all.
MORE_INSIGHTS = 3


# One statement reads everything the e-mail job needs, and locks only the outbox row (the team
# and run rows stay free: every transition of the team locks its row, and the provider call
# below can take seconds). Why one hand-written statement rather than five ORM queries: the
# e-mail job is one of the five jobs of every pipeline, and as five queries (outbox, admins,
# repositories, insights, then the save) it cost a worker about 8 ms of Python and five round
# trips per run, more than the four stage hand-offs together (bench/engine, issue 9).
#
# It runs as a prepared statement ($1 the outbox id, $2 the admin role, $3 how many insights):
# parsing and planning its joins and subqueries took PostgreSQL about 0.5 ms of CPU per e-mail,
# four times its execution. PREPARE is once per connection (worker connections are kept
# across jobs), and it is not transactional: a rollback afterwards leaves it prepared.
READ_STATEMENT = "pipeline_email_read_v1"


@functools.cache
def _read_for_sending_sql() -> str:
    tables = {
        name: model._meta.db_table
        for name, model in {
            "outbox": EmailOutbox,
            "team": Team,
            "run": PipelineRun,
            "membership": Membership,
            "user": get_user_model(),
            "repository": Repository,
            "insight": Insight,
        }.items()
    }
    return """
SELECT to_jsonb(o), t.name, to_jsonb(r),
       ARRAY(SELECT u.email FROM {membership} m JOIN {user} u ON u.id = m.user_id
             WHERE m.team_id = o.team_id AND m.role = $2 AND u.email <> ''
             ORDER BY u.email),
       -- Scope.repository_names, in this statement
       ARRAY(SELECT p.full_name FROM {repository} p
             WHERE p.team_id = o.team_id
               AND p.id IN (SELECT jsonb_array_elements_text(r.repository_ids)::bigint)
             ORDER BY p.full_name),
       ARRAY(SELECT to_jsonb(i) FROM {insight} i WHERE i.run_id = o.run_id
             ORDER BY i.position, i.id LIMIT $3)
FROM {outbox} o
JOIN {team} t ON t.id = o.team_id
JOIN {run} r ON r.id = o.run_id
WHERE o.id = $1
FOR UPDATE OF o
""".format(**tables)


# The psycopg connections this process has prepared READ_STATEMENT on. A connection that closes
# drops out (and its server session, with the statement, is gone), so a new one prepares again.
_prepared_on: weakref.WeakSet = weakref.WeakSet()


def _execute_read(cursor, outbox_id: int) -> None:
    raw_connection = connection.connection
    if raw_connection not in _prepared_on:
        cursor.execute(
            f"PREPARE {READ_STATEMENT} (bigint, text, integer) AS {_read_for_sending_sql()}"
        )
        _prepared_on.add(raw_connection)
    try:
        cursor.execute(
            f"EXECUTE {READ_STATEMENT}(%s, %s, %s)",
            [outbox_id, Membership.Role.ADMIN.value, 1 + MORE_INSIGHTS],
        )
    except DatabaseError as exc:
        if isinstance(exc.__cause__, psycopg.errors.InvalidSqlStatementName):
            # Gone from the session (a DEALLOCATE, or a pooler that swaps server sessions):
            # this job fails and is retried, and its retry prepares the statement again.
            _prepared_on.discard(raw_connection)
        raise


@dataclass
class Sending:
    """An outbox row as read for sending: the row (with its team and run), the team's admins'
    addresses now, and the e-mail's context."""

    outbox: EmailOutbox
    admins: list[str]
    context: dict


def read_for_sending(outbox_id: int) -> Sending:
    """The outbox row, locked (inside the caller's transaction), and what its e-mail says.

    The recipients are the team's admins now, not when the run completed: an admin added since
    gets it, one removed since does not."""
    with connection.cursor() as cursor:
        _execute_read(cursor, outbox_id)
        row = cursor.fetchone()
    if row is None:
        raise EmailOutbox.DoesNotExist(f"outbox {outbox_id} does not exist")
    outbox_row, team_name, run_row, admins, repositories, insight_rows = row
    outbox = from_row(EmailOutbox, outbox_row)
    outbox.team = Team(pk=outbox.team_id, name=team_name)
    outbox.run = from_row(PipelineRun, run_row)
    outbox.run.team = outbox.team
    insights = [from_row(Insight, insight) for insight in insight_rows]
    return Sending(outbox, list(admins), email_context(outbox.run, repositories, insights))


def email_context(run: PipelineRun, repositories: list[str], insights: list[Insight]) -> dict:
    """The numbers the e-mail states: the run's scope (``pipeline.scope``), counted exactly as
    the dashboard counts them (the e-mail is written for the run that just completed, which is
    the one the dashboard then shows). ``repositories`` are the scope's repository names and
    ``insights`` the run's first ones, as ``read_for_sending`` reads them."""
    scope = Scope.of_run(run)
    totals = scope.frozen_totals()
    return {
        "team": run.team,
        "run": run,
        "repositories": repositories,
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


def build_message(sending: Sending) -> EmailMultiAlternatives:
    outbox, context = sending.outbox, sending.context
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
        sending = read_for_sending(outbox_id)
        outbox = sending.outbox
        if outbox.status == EmailOutbox.Status.SENT:
            return
        outbox.attempts += 1
        # The row keeps the list actually used (saved with the outcome, in this transaction).
        outbox.recipients = sending.admins
        if not outbox.recipients:
            outbox.status = EmailOutbox.Status.FAILED
            outbox.error = "The team has no admin with an e-mail address."
            _record(outbox)
            error = outbox.error
        else:
            error = _send(sending, final_attempt=final_attempt)
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


def _send(sending: Sending, *, final_attempt: bool) -> str:
    """Send and record the outcome on the (locked) row; returns the error text, if any."""
    outbox = sending.outbox
    error = ""
    try:
        # Sent while holding the row lock: a concurrent re-queue of the same row waits and
        # then sees SENT, so the e-mail goes out once.
        build_message(sending).send()
    except Exception as exc:
        logger.warning("e-mail for run %s failed: %s", outbox.run_id, exc.__class__.__name__)
        outbox.error = describe_error(exc)[:1000]
        outbox.status = EmailOutbox.Status.FAILED if final_attempt else EmailOutbox.Status.PENDING
        _record(outbox)
        error = outbox.error
    else:
        outbox.status = EmailOutbox.Status.SENT
        outbox.sent_at = timezone.now()
        outbox.error = ""
        _record(outbox)
    return error


def _record(outbox: EmailOutbox) -> None:
    """Write an attempt's outcome on the locked row, in the same transaction: the recipients
    used, the attempt count, status, error and sent time (one UPDATE; as ``Model.save`` it cost
    the job more Python than the hand-off of a stage)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {EmailOutbox._meta.db_table} SET recipients = %s, attempts = %s,"
            " status = %s, error = %s, sent_at = %s WHERE id = %s",
            [
                Jsonb(outbox.recipients),
                outbox.attempts,
                outbox.status,
                outbox.error,
                outbox.sent_at,
                outbox.pk,
            ],
        )


class EmailNotSent(Exception):
    pass
