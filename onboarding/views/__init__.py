"""The onboarding pages, one module per step: accounts (sign-up, home), GitHub connection,
repository selection, progress, retry and cancel, dashboard, and the team (roles, invitations)."""

from onboarding.views.accounts import home, signup
from onboarding.views.dashboard import dashboard
from onboarding.views.github_connect import (
    connect_demo,
    connect_github,
    connect_token,
    oauth_callback,
    oauth_start,
)
from onboarding.views.progress_pages import cancel_pipeline, progress, retry_pipeline
from onboarding.views.repositories import repository_list, select_repositories
from onboarding.views.team import accept_invitation, change_role, create_invitation, team_page

__all__ = [
    "accept_invitation",
    "cancel_pipeline",
    "change_role",
    "create_invitation",
    "team_page",
    "connect_demo",
    "connect_github",
    "connect_token",
    "dashboard",
    "home",
    "oauth_callback",
    "oauth_start",
    "progress",
    "repository_list",
    "retry_pipeline",
    "select_repositories",
    "signup",
]
