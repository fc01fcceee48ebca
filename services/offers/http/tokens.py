"""Event-stream tokens: ``GET /events?token=…`` (EventSource cannot send an Authorization header).

A token is a standard JWT (HS256, PyJWT) naming the identity that asked for it, short-lived and for
this one use: its audience is `AUDIENCE`, so no other JWT of the broker's key is accepted here and
this one is accepted nowhere else. The key is ``EB_HTTP_SECRET`` or, without it, 32 random bytes
kept in ``<data dir>/http-secret``, so tokens outlive a restart of the offers process.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from services.offers.http.auth import AuthError, Identity
from shared.auth import owners

AUDIENCE = "execution-broker/events"
ALGORITHM = "HS256"
SECRET_FILE = "http-secret"
#: RFC 7518 §3.2: an HS256 key is at least as long as the hash, 256 bits.
MIN_SECRET_BYTES = 32
#: Clocks of the processes that issue and verify are the same machine's, but allow a little slack.
LEEWAY_S = 5
#: The identity sources a token may name (see `auth.Identity.source`).
SOURCES = frozenset({"local", "admin", "oidc"})
_CLAIMS = ("sub", "name", "adm", "src", "iat", "exp", "aud")


class EventTokens:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the event-stream token secret must be at least {MIN_SECRET_BYTES} bytes")
        if ttl_s <= 0:
            raise ValueError("the event-stream token lifetime must be positive")
        self._secret = secret
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"EventTokens(ttl_s={self.ttl_s})"

    def issue(self, identity: Identity, now: float | None = None) -> tuple[str, int]:
        issued = int(now if now is not None else time.time())
        expires = issued + self.ttl_s
        claims = {
            "sub": str(owners.from_token(identity.owner)),
            "name": identity.username,
            "adm": identity.admin,
            "src": identity.source,
            "iat": issued,
            "exp": expires,
            "aud": AUDIENCE,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def verify(self, token: str) -> Identity:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                leeway=LEEWAY_S,
                options={"require": list(_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the event-stream token has expired") from None
        except jwt.PyJWTError:
            raise AuthError("invalid event-stream token") from None
        name, admin, source = claims["name"], claims["adm"], claims["src"]
        if not isinstance(name, str) or not isinstance(admin, bool) or source not in SOURCES:
            raise AuthError("invalid event-stream token")
        try:
            owner = owners.parse(claims["sub"]).token
        except owners.OwnerError:
            raise AuthError("invalid event-stream token") from None
        return Identity(name, owner, admin, source)


def event_secret(configured: str | None, data_dir: Path) -> bytes:
    """The key of the event-stream tokens: ``EB_HTTP_SECRET``, or the data directory's own."""
    if configured:
        secret = configured.encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"EB_HTTP_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        return secret
    return stored_secret(data_dir / SECRET_FILE)


def stored_secret(path: Path) -> bytes:
    """The secret in `path` (hex), made first if there is none: 32 random bytes, mode 0600.

    It is written to a temporary file and linked into place, so a reader never sees half a
    secret, and two processes starting at once both end up with the one that was linked first.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = _private_temporary(path)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(MIN_SECRET_BYTES) + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):  # another process was first: use its secret
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    return _read_secret(path)


def _private_temporary(path: Path) -> tuple[int, str]:
    for _ in range(10):
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        try:
            return os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), str(candidate)
        except FileExistsError:
            continue
    raise OSError(f"could not create a temporary file next to {path}")


def _read_secret(path: Path) -> bytes:
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by others than its owner: chmod 600 it")
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path} does not hold a hex secret; delete it to make a new one") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds fewer than {MIN_SECRET_BYTES} bytes; delete it to make a new one")
    return secret
