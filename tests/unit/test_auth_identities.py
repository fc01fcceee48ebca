"""The identity store: its file, logins, and the stamps that let a process trust a login it verified
before exactly while the identity is unchanged."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from shared.auth import owners
from shared.auth.identities import IdentityError, IdentityExists, UnknownIdentity, store_in


def test_the_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = store_in(tmp_path / "data")
        # A reader keeps SQLite's -wal and -shm files in place (the last one to close removes them).
        held = sqlite3.connect(store.path)
        try:
            held.execute("SELECT count(*) FROM identities").fetchone()
            store.add("alice", "a-pw")
            names = sorted(path.name for path in (tmp_path / "data").iterdir())
            assert names == ["identities.db", "identities.db-shm", "identities.db-wal"]
            for path in (tmp_path / "data").iterdir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        finally:
            held.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_add_verify_and_refusals(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    alice = store.add("alice", "a-pw", admin=True)
    assert alice.owner == owners.local("alice")
    assert store.verify("alice", "a-pw") == alice
    assert store.verify("alice", "wrong") is None
    assert store.verify("nobody", "a-pw") is None
    with pytest.raises(IdentityExists):
        store.add("alice", "other")
    with pytest.raises(IdentityError, match="user name"):
        store.add("bad name", "pw")
    with pytest.raises(IdentityError, match="empty"):
        store.add("bob", "")
    with pytest.raises(UnknownIdentity):
        store.disable("nobody")
    store.disable("alice")
    assert store.verify("alice", "a-pw") is None
    assert store.get("alice") is not None and store.get("alice").disabled  # type: ignore[union-attr]


def test_a_stamp_holds_while_the_identity_is_unchanged(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.add("alice", "a-pw")
    verified = store.verify_stamped("alice", "a-pw")
    assert verified is not None
    _, stamp = verified
    assert store.stamp("alice") == stamp
    assert store.stamp("nobody") is None
    store.disable("alice")
    assert store.stamp("alice") is None
    store.enable("alice")
    assert store.stamp("alice") == stamp  # the same password, enabled again
    store.set_password("alice", "a-pw")  # even the same password: a new salt, a new stamp
    assert store.stamp("alice") not in (None, stamp)


def scrypt_hash(password: str) -> str:
    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${2**14}$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def test_an_imported_scrypt_hash_is_rehashed_at_login(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    assert store.import_hash("olga", scrypt_hash("o-pw"))
    assert not store.import_hash("olga", scrypt_hash("other"))  # it exists: kept as it is
    before = store.stamp("olga")
    verified = store.verify_stamped("olga", "o-pw")
    assert verified is not None
    # The stamp given with the login is that of the new Argon2id hash now in the file.
    assert verified[1] == store.stamp("olga") != before
    assert store.verify("olga", "o-pw") is not None
    assert store.verify("olga", "other") is None
