"""An e-mail backend whose provider always refuses (for the outbox failure test)."""

from django.core.mail.backends.base import BaseEmailBackend


class ProviderDown(Exception):
    pass


class EmailBackend(BaseEmailBackend):
    def send_messages(self, email_messages):
        raise ProviderDown("550 provider rejected the message")
