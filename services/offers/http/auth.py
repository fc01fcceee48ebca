"""Who is calling: HTTP Basic against local identities (and the admin), bearer JWTs from an OIDC
issuer, and short-lived signed tokens for the dashboard's event stream (EventSource sends no headers).

The identity reaches the bus as the owner token of the subjects it publishes on, so it must be one
NATS subject token: ``owner_token`` maps any user name to one, deterministically and injectively.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from shared.auth.oidc import OidcError, OidcVerifier
from shared.subjects import is_token

_SAFE = re.compile(r"[A-Za-z0-9_\-@]")
USERNAME = re.compile(r"^[A-Za-z0-9_.@+\-]{1,64}$")

# scrypt: about 50 ms and 16 MiB per hash on this kind of machine.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def owner_token(name: str) -> str:
    """A subject token for a user name: safe characters kept, every other byte written ``=XX``.

    ``=`` itself is escaped, so two different names never map to the same token.
    """
    out = []
    for char in name:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"={byte:02X}" for byte in char.encode("utf-8"))
    token = "".join(out) or "=00"
    assert is_token(token)
    return token


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class Identity:
    username: str
    owner: str
    admin: bool = False
    source: str = "local"


class AuthError(Exception):
    """401 (no or bad credentials) or 403 (``forbidden``)."""

    def __init__(self, reason: str, *, forbidden: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.forbidden = forbidden


# -- OIDC bearer tokens ---------------------------------------------------------------------------


async def oidc_identity(verifier: OidcVerifier, token: str) -> Identity:
    """The caller a bearer token proves: owned by ``owners.oidc(iss, sub)``; ``preferred_username``
    (or the ``sub``) is the name shown, never the owner, since a provider's user may pick any."""
    try:
        proven = await verifier.verify(token)
    except OidcError as exc:  # a fixed reason, never the token
        raise AuthError(f"invalid bearer token: {exc}") from None
    return Identity(username=proven.preferred_username or proven.sub, owner=proven.owner.token, source="oidc")


# -- event-stream tokens ----------------------------------------------------------------------------


class EventTokens:
    """Short-lived HMAC-signed tokens naming an identity, for ``GET /events?token=…``."""

    def __init__(self, secret: str | None, ttl_s: int) -> None:
        self._secret = secret.encode() if secret else os.urandom(32)
        self.ttl_s = ttl_s

    def _sign(self, body: bytes) -> str:
        mac = hmac.new(self._secret, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, identity: Identity, now: float | None = None) -> tuple[str, int]:
        expires = int((now if now is not None else time.time()) + self.ttl_s)
        claims = {"u": identity.username, "o": identity.owner, "a": identity.admin, "s": identity.source}
        body = base64.urlsafe_b64encode(json.dumps({**claims, "exp": expires}).encode()).decode().rstrip("=")
        return f"{body}.{self._sign(body.encode())}", expires

    def verify(self, token: str, now: float | None = None) -> Identity:
        body, _, signature = token.partition(".")
        if not hmac.compare_digest(self._sign(body.encode()), signature):
            raise AuthError("invalid event-stream token")
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            expires = int(claims["exp"])
            identity = Identity(str(claims["u"]), str(claims["o"]), bool(claims["a"]), str(claims["s"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise AuthError("invalid event-stream token") from None
        if expires < (now if now is not None else time.time()):
            raise AuthError("the event-stream token has expired")
        return identity


# -- the authenticator -----------------------------------------------------------------------------

PasswordLookup = Callable[[str], Awaitable[str | None]]


class Authenticator:
    def __init__(
        self,
        *,
        admin_username: str | None,
        admin_password: str | None,
        lookup_password: PasswordLookup,
        oidc: OidcVerifier | None = None,
        cache_s: float = 300.0,
    ) -> None:
        self.admin_username = admin_username
        self._admin_password = admin_password
        self._lookup = lookup_password
        self.oidc = oidc
        self._cache_s = cache_s
        # Verified Basic credentials (keyed by a digest, never the password) skip the slow KDF.
        self._verified: dict[bytes, tuple[Identity, float]] = {}

    def challenge(self) -> str:
        realm = 'realm="execution-broker"'
        return f"Basic {realm}, Bearer {realm}" if self.oidc else f"Basic {realm}"

    async def identify(self, authorization: str | None) -> Identity | None:
        """The caller, None without credentials; ``AuthError`` for credentials that do not verify."""
        if not authorization:
            return None
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return await self._basic(value.strip())
        if scheme == "bearer":
            if self.oidc is None:
                raise AuthError("bearer tokens are not accepted: no OIDC issuer is configured")
            return await oidc_identity(self.oidc, value.strip())
        raise AuthError(f"unsupported authorization scheme {scheme!r}")

    async def _basic(self, value: str) -> Identity:
        try:
            username, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (ValueError, binascii.Error):
            raise AuthError("malformed Basic credentials") from None
        if not sep or not username:
            raise AuthError("malformed Basic credentials")
        key = hashlib.sha256(f"{username}\0{password}".encode()).digest()
        cached = self._verified.get(key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        identity = await self._check(username, password)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[key] = (identity, time.monotonic() + self._cache_s)
        return identity

    async def _check(self, username: str, password: str) -> Identity:
        if self.admin_username and self._admin_password and username == self.admin_username:
            if hmac.compare_digest(password.encode(), self._admin_password.encode()):
                return Identity(username, owner_token(username), admin=True, source="admin")
            raise AuthError("wrong user name or password")
        stored = await self._lookup(username)
        if stored is None:
            # Spend the same time as a real check so user names cannot be probed by timing.
            await asyncio.to_thread(verify_password, password, _DUMMY_HASH)
            raise AuthError("wrong user name or password")
        if not await asyncio.to_thread(verify_password, password, stored):
            raise AuthError("wrong user name or password")
        return Identity(username, owner_token(username))


_DUMMY_HASH = hash_password("not a password", salt=b"0123456789abcdef")
