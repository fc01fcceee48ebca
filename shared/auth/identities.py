"""The broker's local identities: user name, password hash, admin flag, disabled flag, in one SQLite
file that the HTTP API, the auth callout and ``broker users`` all read, so a user logs in with the
same password on HTTP and on NATS, and a disabled identity is out of both at once.

Blocking calls (SQLite and the password hash): run them in a worker thread from async code. Each
call opens its own connection, so several processes (the callout, the offers service, the CLI) can
share the file; WAL keeps readers and the one writer out of each other's way.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from shared.auth import owners
from shared.auth.passwords import DUMMY_HASH, check_password_length, hash_password, verify_password

#: The file's name in a data directory.
FILE_NAME = "identities.db"
USERNAME = re.compile(r"^[A-Za-z0-9_.@+\-]{1,64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    admin         INTEGER NOT NULL DEFAULT 0,
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
)
"""


class IdentityError(ValueError):
    """A specific, secret-free reason an identity operation was refused."""


class IdentityExists(IdentityError):
    pass


class UnknownIdentity(IdentityError):
    pass


@dataclass(frozen=True)
class LocalIdentity:
    username: str
    admin: bool = False
    disabled: bool = False

    @property
    def owner(self) -> owners.Owner:
        return owners.local(self.username)


def check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise IdentityError("a user name is 1 to 64 letters, digits or . _ @ + -")


class IdentityStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Made 0600 before SQLite opens it: SQLite gives its -wal and -shm files the database
        # file's mode, so they never exist readable by others, not even for a moment.
        with suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=10000")
            yield db
        finally:
            db.close()

    # -- administration ---------------------------------------------------------------------------

    def add(self, username: str, password: str, *, admin: bool = False) -> LocalIdentity:
        check_username(username)
        hashed = _hash(password)
        now = _now()
        try:
            with self._db() as db:
                db.execute(
                    "INSERT INTO identities(username, password_hash, admin, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (username, hashed, int(admin), now, now),
                )
        except sqlite3.IntegrityError:
            raise IdentityExists(f"the identity {username} exists") from None
        return LocalIdentity(username, admin)

    def set_password(self, username: str, password: str) -> None:
        """A new password (an admin's reset). A disabled identity stays disabled: see `enable`."""
        hashed = _hash(password)
        self._update(username, "password_hash = ?", (hashed,))

    def disable(self, username: str) -> None:
        self._update(username, "disabled = 1", ())

    def enable(self, username: str) -> None:
        self._update(username, "disabled = 0", ())

    def _update(self, username: str, assignment: str, values: tuple[object, ...]) -> None:
        # `assignment` is one of the fixed strings above, never input.
        with self._db() as db:
            cursor = db.execute(
                f"UPDATE identities SET {assignment}, updated_at = ? WHERE username = ?",
                (*values, _now(), username),
            )
        if cursor.rowcount == 0:
            raise UnknownIdentity(f"there is no identity {username}")

    def get(self, username: str) -> LocalIdentity | None:
        with self._db() as db:
            row = db.execute(
                "SELECT username, admin, disabled FROM identities WHERE username = ?", (username,)
            ).fetchone()
        return None if row is None else LocalIdentity(row[0], bool(row[1]), bool(row[2]))

    def all(self) -> list[LocalIdentity]:
        with self._db() as db:
            rows = db.execute("SELECT username, admin, disabled FROM identities ORDER BY username").fetchall()
        return [LocalIdentity(r[0], bool(r[1]), bool(r[2])) for r in rows]

    # -- login ------------------------------------------------------------------------------------

    def verify(self, username: str, password: str) -> LocalIdentity | None:
        """The identity when `password` is its password and it is enabled; None otherwise (the
        caller says only "wrong user name or password", so nothing tells which part was wrong).

        An unknown name costs one hash too, so timing does not reveal which names exist. A hash in
        an older scheme is replaced by an Argon2id one on success.
        """
        verified = self.verify_stamped(username, password)
        return None if verified is None else verified[0]

    def stamp(self, username: str) -> str | None:
        """What `verify_stamped` gave with a successful login, for as long as the identity is
        unchanged: a new password, a rehash, the admin flag or disabling change it (a disabled or
        unknown identity has none). It costs one query and no hash, so a process that remembers
        successful logins can trust one exactly while its stamp holds, whoever changes the file.
        """
        with self._db() as db:
            row = db.execute(
                "SELECT password_hash, admin, disabled FROM identities WHERE username = ?", (username,)
            ).fetchone()
        if row is None or row[2]:
            return None
        return _stamp(row[0], bool(row[1]))

    def verify_stamped(self, username: str, password: str) -> tuple[LocalIdentity, str] | None:
        """`verify`, and the identity's `stamp` as of the row that was verified (read in the same
        query, so no change between the check and the stamp can be mistaken for the checked state)."""
        with self._db() as db:
            row = db.execute(
                "SELECT password_hash, admin, disabled FROM identities WHERE username = ?", (username,)
            ).fetchone()
        if row is None:
            verify_password(password, DUMMY_HASH)
            return None
        stored, admin, disabled = row
        valid, rehashed = verify_password(password, stored)
        if not valid or disabled:
            return None
        if rehashed is not None:
            with self._db() as db:
                # Only if nobody changed it meanwhile (a reset must win over a rehash).
                cursor = db.execute(
                    "UPDATE identities SET password_hash = ?, updated_at = ? "
                    "WHERE username = ? AND password_hash = ?",
                    (rehashed, _now(), username, stored),
                )
            if cursor.rowcount == 1:
                stored = rehashed
        return LocalIdentity(username, bool(admin), False), _stamp(stored, bool(admin))

    def import_hash(self, username: str, stored_hash: str, *, admin: bool = False) -> bool:
        """Keep an identity from elsewhere with its existing hash (migration); False if it exists."""
        check_username(username)
        now = _now()
        with self._db() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO identities(username, password_hash, admin, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (username, stored_hash, int(admin), now, now),
            )
        return cursor.rowcount == 1


def _hash(password: str) -> str:
    try:
        check_password_length(password)
    except ValueError as exc:
        raise IdentityError(str(exc)) from None
    return hash_password(password)


def _stamp(stored_hash: str, admin: bool) -> str:
    # A digest, not the hash itself: whoever keeps stamps keeps nothing to guess passwords against.
    return hashlib.sha256(f"{stored_hash}\0{int(admin)}".encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def store_in(data_dir: Path) -> IdentityStore:
    return IdentityStore(data_dir / FILE_NAME)
