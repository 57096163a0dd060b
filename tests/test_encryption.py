"""Tokens are encrypted at rest, and keys can be rotated."""

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection as db_connection
from fernet_fields import hkdf

from qb_oauth.fields import is_unreadable
from qb_oauth.models import QuickBooksConnection

pytestmark = pytest.mark.django_db(transaction=True)

COLUMNS = ("access_token", "refresh_token", "id_token")


def raw_columns(pk):
    table = QuickBooksConnection._meta.db_table
    with db_connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE id = %s", [pk])
        return [bytes(value) if value is not None else b"" for value in cursor.fetchone()]


def clear_field_key_cache():
    # fernet_fields caches the keys on each field; a test that changes FERNET_KEYS resets them.
    for name in COLUMNS:
        field = QuickBooksConnection._meta.get_field(name)
        for attr in ("keys", "fernet_keys", "fernet"):
            field.__dict__.pop(attr, None)


@pytest.fixture
def keys(settings):
    clear_field_key_cache()
    yield settings
    clear_field_key_cache()


def test_raw_columns_hold_no_plaintext(fake_intuit, user, connect_realm):
    conn = connect_realm(user, scopes=["com.intuit.quickbooks.accounting", "openid"])
    raw = raw_columns(conn.pk)
    for secret, stored in zip(
        (conn.access_token, conn.refresh_token, conn.id_token), raw, strict=True
    ):
        assert secret
        assert secret.encode() not in stored
        assert stored.startswith(b"gAAAAA")  # a Fernet token
    everything = b"".join(raw)
    for secret in fake_intuit.issued_tokens():
        assert secret.encode() not in everything


def test_key_rotation_reencrypts_with_the_first_key(fake_intuit, user, connect_realm, keys):
    keys.FERNET_KEYS = ["old-key"]
    conn = connect_realm(user)
    old_raw = raw_columns(conn.pk)

    keys.FERNET_KEYS = ["new-key", "old-key"]
    clear_field_key_cache()
    assert QuickBooksConnection.objects.get(pk=conn.pk).refresh_token == conn.refresh_token
    call_command("qb_rotate_keys", stdout=open("/dev/null", "w"))
    new_raw = raw_columns(conn.pk)
    assert new_raw[1] != old_raw[1]

    keys.FERNET_KEYS = ["new-key"]
    clear_field_key_cache()
    assert QuickBooksConnection.objects.get(pk=conn.pk).refresh_token == conn.refresh_token

    # A key that no longer opens the row: it still loads (one bad row breaks only itself),
    # each token as an UnreadableToken, and a save writes the ciphertext back unchanged.
    keys.FERNET_KEYS = ["old-key"]
    clear_field_key_cache()
    with pytest.raises(InvalidToken):
        Fernet(hkdf.derive_fernet_key("old-key")).decrypt(bytes(new_raw[1]))
    row = QuickBooksConnection.objects.get(pk=conn.pk)
    assert is_unreadable(row.access_token) and is_unreadable(row.refresh_token)
    assert row.id_token is None or is_unreadable(row.id_token)
    row.save()
    assert raw_columns(conn.pk) == new_raw
