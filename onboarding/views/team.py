"""The team page: who is in the team and with which role; admins invite people by a one-time
link and change roles.

Invitation links carry a random token; only its SHA-256 is stored, and accepting marks the row
used under a row lock, so two people racing with one link give one membership. A team always
keeps at least one admin (the last admin cannot be made a member)."""

from __future__ import annotations

import datetime
import hashlib
import secrets

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from onboarding.backends import BACKEND
from onboarding.http import AuthenticatedHttpRequest, admin_team_of, is_team_admin, team_of
from onboarding.models import Invitation, Membership

INVITATION_VALID_FOR = datetime.timedelta(days=7)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _team_context(request: AuthenticatedHttpRequest, **extra) -> dict:
    team = team_of(request)
    return {
        "team": team,
        "memberships": team.memberships.select_related("user").order_by("user__username"),
        "is_admin": is_team_admin(request),
        "roles": Membership.Role.choices,
        "open_invitations": team.invitations.filter(
            used_at__isnull=True, expires_at__gt=timezone.now()
        ).count(),
        **extra,
    }


@login_required
@require_GET
def team_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    return render(request, "onboarding/team.html", _team_context(request))


@login_required
@require_POST
def create_invitation(request: AuthenticatedHttpRequest) -> HttpResponse:
    team = admin_team_of(request)
    role = request.POST.get("role", Membership.Role.MEMBER)
    if role not in Membership.Role.values:
        role = Membership.Role.MEMBER
    token = secrets.token_urlsafe(32)
    Invitation.objects.create(
        team=team,
        token_hash=_hash(token),
        role=role,
        created_by=request.user,
        expires_at=timezone.now() + INVITATION_VALID_FOR,
    )
    # Shown once, in this response only: it is not stored anywhere it could be read back.
    link = request.build_absolute_uri(reverse("accept_invitation", args=[token]))
    context = _team_context(request, invitation_link=link, invitation_role=role)
    return render(request, "onboarding/team.html", context)


@login_required
@require_POST
def change_role(request: AuthenticatedHttpRequest, membership_id: int) -> HttpResponse:
    team = admin_team_of(request)
    role = request.POST.get("role", "")
    if role not in Membership.Role.values:
        messages.error(request, "Choose admin or member.")
        return redirect("team")
    with transaction.atomic():
        # Lock the team's admin rows: two admins demoting each other at once leave one.
        admins = list(
            Membership.objects.select_for_update().filter(team=team, role=Membership.Role.ADMIN)
        )
        membership = get_object_or_404(Membership, pk=membership_id, team=team)
        if role == Membership.Role.MEMBER and [m.pk for m in admins] == [membership.pk]:
            messages.error(
                request, "A team needs at least one admin: make someone else admin first."
            )
            return redirect("team")
        membership.role = role
        membership.save(update_fields=["role"])
    messages.info(
        request, f"{membership.user.username} is now {membership.get_role_display().lower()}."
    )
    return redirect("team")


class JoinForm(UserCreationForm):
    email = forms.EmailField(help_text="Where the team's e-mails reach you.")

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")


def _usable(token: str, *, lock: bool = False) -> Invitation:
    invitations = Invitation.objects.select_related("team")
    if lock:
        invitations = invitations.select_for_update()
    invitation = invitations.filter(token_hash=_hash(token)).first()
    if (
        invitation is None
        or invitation.used_at is not None
        or invitation.expires_at <= timezone.now()
    ):
        raise Http404("This invitation link is not valid any more: ask for a new one.")
    return invitation


@require_http_methods(["GET", "POST"])
def accept_invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Join the team of a one-time link: as a new account (anonymous visitor) or with the
    logged-in account when it has no team yet."""
    invitation = _usable(token)
    user = request.user
    if user.is_authenticated and getattr(user, "membership", None) is not None:
        context = {"invitation": invitation, "already": user.membership.team}
        return render(request, "onboarding/accept_invitation.html", context, status=409)
    form = JoinForm(request.POST or None) if not user.is_authenticated else None
    if request.method == "POST" and (form is None or form.is_valid()):
        with transaction.atomic():
            invitation = _usable(token, lock=True)
            if form is not None:
                user = form.save()
            Membership.objects.create(team=invitation.team, user=user, role=invitation.role)
            invitation.used_at = timezone.now()
            invitation.used_by = user
            invitation.save(update_fields=["used_at", "used_by"])
        if form is not None:
            login(request, user, backend=BACKEND)
        messages.info(request, f"Welcome to {invitation.team.name}.")
        return redirect("home")
    context = {"invitation": invitation, "form": form}
    return render(request, "onboarding/accept_invitation.html", context)
