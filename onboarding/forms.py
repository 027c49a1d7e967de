"""Forms of the onboarding pages: sign-up and the personal access token."""

from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.db import transaction

from onboarding.models import Membership, Team


class SignUpForm(UserCreationForm):
    """A new user and the new team they create; the first user of a team is its admin."""

    email = forms.EmailField(help_text="Where we send “your insights are ready”.")
    team_name = forms.CharField(max_length=200, label="Team name")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_team_name(self) -> str:
        name = self.cleaned_data["team_name"].strip()
        if not name:
            raise forms.ValidationError("Give your team a name.")
        return name

    @transaction.atomic
    def save(self, commit: bool = True):
        # User, team and membership together, or none of them: a half-created account would
        # log in to a page that cannot find its team.
        user = super().save(commit=True)
        team = Team.objects.create(name=self.cleaned_data["team_name"])
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
        return user


class PersonalTokenForm(forms.Form):
    # render_value=False: a token typed into a form that fails validation is not sent back.
    token = forms.CharField(
        label="Personal access token",
        max_length=255,
        strip=True,
        widget=forms.PasswordInput(
            render_value=False, attrs={"autocomplete": "off", "placeholder": "ghp_…"}
        ),
        help_text="Needs read access to the repositories (classic: repo, read:org).",
    )
