"""Staff actions on pipelines and jobs, each recorded in the audit log.

The admin and ``manage.py pipeline`` both come here: every action goes through
``pipeline.transitions`` (or ``pipeline.rescue`` for a stalled job), and writes one
``StaffAction`` row saying who did what to which target, why, and what came of it, whether it
succeeded or was refused. The row is written after the action's own transaction, so a refused
or failed action is logged too; an action is never half-logged inside a rolled-back one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from onboarding.models import Team
from pipeline import transitions
from pipeline.errors import InvalidSelection, PipelineNotRetryable, PipelineNotRunning
from pipeline.models import StaffAction


@dataclass(frozen=True)
class Result:
    succeeded: bool
    message: str


class Action:
    RETRY = "retry"
    RESTART = "restart"
    CANCEL = "cancel"
    REQUEUE = "requeue"

    LABELS = {
        RETRY: "Retry from failed stage",
        RESTART: "Restart pipeline",
        CANCEL: "Cancel pipeline",
        REQUEUE: "Re-queue job",
    }


def record(
    actor: AbstractBaseUser | AnonymousUser | str | None,
    action: str,
    target: str,
    reason: str,
    result: Result,
    team: Team | int | None = None,
) -> StaffAction:
    if isinstance(actor, str) or actor is None:
        user, username = None, actor or "unknown"
    else:
        user = actor if getattr(actor, "pk", None) else None
        username = actor.get_username() if user else "anonymous"
    return StaffAction.objects.create(
        user=user,
        username=username,
        action=action,
        target=target[:300],
        team_id=team.pk if isinstance(team, Team) else team,
        reason=reason,
        outcome=result.message,
        succeeded=result.succeeded,
    )


def team_target(team: Team) -> str:
    return f"team {team.pk} ({team.name})"


def _perform(action: str, team: Team, reason: str) -> Result:
    try:
        if action == Action.RETRY:
            run = transitions.retry_pipeline(team)
            return Result(True, f"{team.name}: {run.kind} run {run.pk} resumed at {run.stage}")
        if action == Action.RESTART:
            run = transitions.restart_pipeline(team)
            return Result(True, f"{team.name}: restarted as {run.kind} run {run.pk}")
        if action == Action.CANCEL:
            run = transitions.cancel_pipeline(team, reason=reason)
            return Result(True, f"{team.name}: {run.kind} run {run.pk} cancelled")
    except (PipelineNotRetryable, PipelineNotRunning, InvalidSelection) as exc:
        return Result(False, f"{team.name}: {exc}")
    raise ValueError(f"unknown action {action!r}")


def act_on_team(actor, action: str, team: Team, reason: str) -> Result:
    """Retry, restart or cancel ``team``'s pipeline for ``reason``; always audited."""
    reason = reason.strip()
    if not reason:
        return Result(False, "A reason is required.")
    result = _perform(action, team, reason)
    record(actor, action, team_target(team), reason, result, team=team)
    return result
