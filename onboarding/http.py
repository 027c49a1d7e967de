"""A typed request for views that require a logged-in member of a team, and the role checks.

Roles: a team's admins connect GitHub, choose repositories, start, retry and cancel runs, invite
people and change roles; members see the progress and the dashboard. Every view calls
``team_of`` (member or admin) or ``admin_team_of`` (admin only) first: both scope the view to
the viewer's own team, and the second refuses members with 403."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from onboarding.models import Membership, Team

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_htmx.middleware import HtmxDetails


class AuthenticatedHttpRequest(HttpRequest):
    user: User
    htmx: HtmxDetails


NO_TEAM = "You are not a member of a team yet."


def _membership_of(request: HttpRequest) -> Membership:
    membership = getattr(request.user, "membership", None)
    if membership is None:
        raise Http404(NO_TEAM)
    return membership


def team_of(request: HttpRequest) -> Team:
    """The logged-in user's team. Every view scopes its queries with this, so another team's
    ids are simply not found (404), never shown."""
    return _membership_of(request).team


def team_id_of(request: HttpRequest) -> int:
    """``team_of(request).pk`` without reading the team's row (the live stream opens a
    thousand at once after a deploy and needs only the id)."""
    return _membership_of(request).team_id


ADMINS_ONLY = "Only the team's admins can do this. Ask one of them, or ask to be made an admin."


def is_team_admin(request: HttpRequest) -> bool:
    membership = getattr(request.user, "membership", None)
    return membership is not None and membership.role == Membership.Role.ADMIN


def admin_team_of(request: HttpRequest) -> Team:
    """The logged-in user's team when they are one of its admins; 403 for a member (404 for a
    user without a team, like ``team_of``)."""
    team = team_of(request)
    if not is_team_admin(request):
        raise PermissionDenied(ADMINS_ONLY)
    return team
