"""Default receivers: structured log lines, one per event."""

from __future__ import annotations

import logging

from pipeline import signals

logger = logging.getLogger("pipeline.events")


def log_sync_completed(sender, *, team_id, run_id, repositories_synced, prs_synced, **kwargs):
    logger.info(
        "onboarding_sync_completed team=%s run=%s repositories=%s prs=%s",
        team_id,
        run_id,
        repositories_synced,
        prs_synced,
    )


def log_repository_synced(sender, *, team_id, run_id, repository_id, prs_synced, **kwargs):
    logger.info(
        "repository_sync_completed team=%s run=%s repository=%s prs=%s",
        team_id,
        run_id,
        repository_id,
        prs_synced,
    )


def log_pipeline_completed(sender, *, team_id, run_id, **kwargs):
    logger.info("pipeline_completed team=%s run=%s", team_id, run_id)


def log_pipeline_failed(sender, *, team_id, run_id, stage, error, **kwargs):
    logger.warning(
        "pipeline_failed team=%s run=%s stage=%s error=%r", team_id, run_id, stage, error
    )


def connect() -> None:
    signals.onboarding_sync_completed.connect(log_sync_completed, dispatch_uid="log_sync")
    signals.repository_sync_completed.connect(log_repository_synced, dispatch_uid="log_repo")
    signals.pipeline_completed.connect(log_pipeline_completed, dispatch_uid="log_completed")
    signals.pipeline_failed.connect(log_pipeline_failed, dispatch_uid="log_failed")
