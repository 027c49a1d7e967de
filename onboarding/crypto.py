"""Encryption of GitHub tokens at rest (Fernet: AES-128-CBC + HMAC-SHA256, from `cryptography`).

The key is ``settings.TOKEN_ENCRYPTION_KEY`` (from the environment; a generated key only in the
embedded development mode). Several keys may be given separated by commas: the first encrypts,
all of them decrypt, so a key can be rotated without breaking stored tokens
(https://cryptography.io/en/latest/fernet/#cryptography.fernet.MultiFernet).

Nothing here ever puts the token or the key into an exception message, a log line or a repr.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class TokenUnreadable(Exception):
    """The stored token cannot be decrypted (the key changed, or the data is damaged). The
    only fix is reconnecting GitHub, so callers show the broken-connection message."""

    def __init__(self) -> None:
        super().__init__("The stored GitHub token cannot be decrypted with the current key.")


def _fernet() -> MultiFernet:
    raw = settings.TOKEN_ENCRYPTION_KEY or ""
    keys = [key.strip() for key in raw.split(",") if key.strip()]
    if not keys:
        raise ImproperlyConfigured("TOKEN_ENCRYPTION_KEY must be set to store GitHub tokens.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError:
        # Fernet's own message is fine, but never echo the key itself.
        raise ImproperlyConfigured(
            "TOKEN_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)."
        ) from None


def encrypt_token(token: str) -> bytes:
    """Ciphertext of ``token`` for ``GitHubConnection.encrypted_token``."""
    if not token:
        raise ValueError("An empty token cannot be stored.")
    return _fernet().encrypt(token.encode())


def decrypt_token(ciphertext: bytes | memoryview | None) -> str:
    """The token stored as ``ciphertext``; raises TokenUnreadable if it cannot be decrypted."""
    if not ciphertext:
        raise TokenUnreadable()
    try:
        return _fernet().decrypt(bytes(ciphertext)).decode()
    except (InvalidToken, UnicodeDecodeError):
        raise TokenUnreadable() from None
