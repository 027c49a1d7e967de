"""A typed request for views that require a logged-in member of a team."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import Http404, HttpRequest

from onboarding.models import Team

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_htmx.middleware import HtmxDetails


class AuthenticatedHttpRequest(HttpRequest):
    user: User
    htmx: HtmxDetails


def team_of(request: HttpRequest) -> Team:
    """The logged-in user's team. Every view scopes its queries with this, so another team's
    ids are simply not found (404), never shown."""
    membership = getattr(request.user, "membership", None)
    if membership is None:
        raise Http404("You are not a member of a team yet.")
    return membership.team
