"""Tokens at rest: encrypted in the database, readable with the key, a clear error without it."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from onboarding.crypto import TokenUnreadable, decrypt_token, encrypt_token
from onboarding.models import GitHubConnection

TOKEN = "ghp_s3cretTokenValue0123456789abcdefABCD"


def test_a_token_survives_the_round_trip_and_is_not_stored_in_clear():
    ciphertext = encrypt_token(TOKEN)

    assert TOKEN.encode() not in ciphertext
    assert decrypt_token(ciphertext) == TOKEN


@pytest.mark.django_db
def test_the_database_holds_only_ciphertext(team):
    conn = GitHubConnection(team=team, kind="pat", api_url="http://127.0.0.1:9", account_login="a")
    conn.set_token(TOKEN)
    conn.save()

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT encrypted_token FROM onboarding_githubconnection WHERE id = %s", [conn.pk]
        )
        (stored,) = cursor.fetchone()
    assert TOKEN.encode() not in bytes(stored)
    assert GitHubConnection.objects.get(pk=conn.pk).get_token() == TOKEN
    assert TOKEN not in repr(conn) and TOKEN not in str(conn)


def test_a_changed_key_gives_token_unreadable_without_revealing_anything(settings):
    ciphertext = encrypt_token(TOKEN)
    new_key = Fernet.generate_key().decode()
    settings.TOKEN_ENCRYPTION_KEY = new_key

    with pytest.raises(TokenUnreadable) as caught:
        decrypt_token(ciphertext)

    message = str(caught.value)
    assert "cannot be decrypted" in message
    assert TOKEN not in message and new_key not in message


def test_a_rotated_key_list_still_reads_tokens_written_with_the_old_key(settings):
    old_key = settings.TOKEN_ENCRYPTION_KEY
    ciphertext = encrypt_token(TOKEN)
    settings.TOKEN_ENCRYPTION_KEY = f"{Fernet.generate_key().decode()},{old_key}"

    assert decrypt_token(ciphertext) == TOKEN
    # New writes use the first (new) key: the old key alone cannot read them.
    fresh = encrypt_token(TOKEN)
    settings.TOKEN_ENCRYPTION_KEY = old_key
    with pytest.raises(TokenUnreadable):
        decrypt_token(fresh)


@pytest.mark.parametrize("stored", [b"", None, b"not a fernet token"])
def test_missing_or_damaged_ciphertext_is_token_unreadable(stored):
    with pytest.raises(TokenUnreadable):
        decrypt_token(stored)


def test_a_missing_or_malformed_key_is_a_configuration_error_that_hides_the_key(settings):
    settings.TOKEN_ENCRYPTION_KEY = ""
    with pytest.raises(ImproperlyConfigured):
        encrypt_token(TOKEN)

    settings.TOKEN_ENCRYPTION_KEY = "short-and-wrong-key"
    with pytest.raises(ImproperlyConfigured) as caught:
        encrypt_token(TOKEN)
    assert "short-and-wrong-key" not in str(caught.value)
