"""Django's model backend, with the user's team membership loaded in the same query.

Every page, fragment and live stream scopes itself to the user's team (``onboarding.http``), so
the membership is read right after the user on every request: one query instead of two. A
reconnect storm authorises a thousand streams at once (``onboarding.live_asgi``, bench/live),
where the user, the membership and the session were a third of the time each.

Sessions store the path of the backend that logged them in; Django's own backend stays listed
after this one (settings.AUTHENTICATION_BACKENDS), so sessions from before it keep working.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.base_user import AbstractBaseUser

# The path sessions record for users logged in by our own views.
BACKEND = "onboarding.backends.MembershipModelBackend"


class MembershipModelBackend(ModelBackend):
    def get_user(self, user_id: int) -> AbstractBaseUser | None:
        user_model = get_user_model()
        try:
            user = user_model._default_manager.select_related("membership").get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        return user if self.user_can_authenticate(user) else None
