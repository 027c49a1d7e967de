from __future__ import annotations

from django.conf import settings
from django.db import models

from onboarding.crypto import decrypt_token, encrypt_token
from pipeline.status import PipelineStatus


class Team(models.Model):
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    # Written only by pipeline.transitions (under a row lock), read everywhere.
    pipeline_status = models.CharField(
        max_length=32, choices=PipelineStatus.choices, default=PipelineStatus.NOT_STARTED
    )
    # User-facing text: never a stack trace, never a secret.
    pipeline_error = models.TextField(blank=True, default="")
    pipeline_started_at = models.DateTimeField(null=True, blank=True)
    pipeline_completed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    # One team per user keeps "the user's team" unambiguous in every view.
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class GitHubConnection(models.Model):
    class Kind(models.TextChoices):
        OAUTH = "oauth", "OAuth"
        PERSONAL_TOKEN = "pat", "Personal access token"
        DEMO = "demo", "Demo organisation"

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="github_connection")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Fernet ciphertext of the token (see onboarding.crypto); never the token itself.
    encrypted_token = models.BinaryField()
    api_url = models.URLField(max_length=500)
    account_login = models.CharField(max_length=200)
    connected_at = models.DateTimeField(auto_now=True)
    # When GitHub's repository listing was last fetched for this connection (the picker
    # re-uses it for a few minutes); the repositories it listed carry the same listed_at.
    repositories_listed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "GitHub connection"

    def __str__(self) -> str:
        return f"{self.team} as {self.account_login}"

    def set_token(self, token: str) -> None:
        self.encrypted_token = encrypt_token(token)

    def get_token(self) -> str:
        """The plain token; raises onboarding.crypto.TokenUnreadable if the key changed."""
        return decrypt_token(self.encrypted_token)


class Repository(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="repositories")
    github_id = models.BigIntegerField()
    full_name = models.CharField(max_length=300)
    is_private = models.BooleanField(default=False)
    default_branch = models.CharField(max_length=200, blank=True, default="")
    selected = models.BooleanField(default=False)
    last_synced_at = models.DateTimeField(null=True, blank=True)
    # The connection's listing that last included this repository (see GitHubConnection).
    listed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "github_id"], name="repository_unique_per_team")
        ]
        ordering = ["full_name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.full_name


class Invitation(models.Model):
    """A one-time link an admin gives to someone to join the team. Only the SHA-256 of the
    link's token is stored: the database (or a backup) cannot be used to join."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    token_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(
        max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    def __str__(self) -> str:
        return f"invitation to {self.team} ({self.role})"
