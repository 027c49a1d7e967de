"""Errors a stage raises to say what went wrong in words a user can act on."""

from __future__ import annotations


class StageError(Exception):
    """A failure with a user-facing message.

    ``retryable=False`` fails the pipeline at once (a revoked token does not get better by
    trying again: no retry storm); ``retryable=True`` lets the task's retry strategy try again.
    The message is shown to users: no stack traces, no secrets.
    """

    def __init__(self, user_message: str, *, retryable: bool = False) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.retryable = retryable


class InvalidSelection(ValueError):
    """The repositories asked for are not valid for this team; nothing was enqueued."""


class PipelineNotRetryable(ValueError):
    """retry_pipeline was asked for a team whose pipeline has not failed."""


class RescheduleStage(Exception):
    """Raised by a stage to continue later (e.g. after a GitHub rate-limit reset) without
    holding a worker: the runner defers the same stage for ``at`` and finishes this job."""

    def __init__(self, at, reason: str) -> None:  # at: aware datetime
        super().__init__(reason)
        self.at = at
        self.reason = reason


class PipelineNotRunning(ValueError):
    """cancel_pipeline was asked for a team with no running run."""
