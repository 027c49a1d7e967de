"""Hooks for side effects (analytics, webhooks, logs). Sent only after the transaction that
caused them commits, so a receiver never sees a state that was rolled back. The pipeline's own
ordering never depends on them: the queue does that."""

from django.dispatch import Signal

# kwargs: team_id, run_id, repositories_synced, prs_synced
onboarding_sync_completed = Signal()
# kwargs: team_id, run_id, repository_id, full_name, prs_synced
repository_sync_completed = Signal()
# kwargs: team_id, run_id, kind (the RunKind)
pipeline_completed = Signal()
# kwargs: team_id, run_id, stage, error
pipeline_failed = Signal()
