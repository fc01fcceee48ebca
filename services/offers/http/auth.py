"""Who is calling: HTTP Basic against the local identities (`shared.auth.identities`, the file that
``broker users`` writes too) and the configured admin, bearer JWTs from an OIDC issuer.

The identity reaches the bus as the owner token of the subjects it publishes on: a local user's and
the configured admin's is ``owners.local(username).token``, the owner the auth callout gives a local
user on NATS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from shared.auth import owners
from shared.auth.identities import IdentityStore
from shared.auth.oidc import OidcError, OidcVerifier


@dataclass(frozen=True)
class Identity:
    """``owner`` is the owner's subject token (`shared.auth.owners.Owner.token`); ``source`` is
    ``local`` (the identity store), ``admin`` (the configured administrator) or ``oidc``."""

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


# -- the authenticator -----------------------------------------------------------------------------

WRONG = "wrong user name or password"
#: Remembered logins at most (a flood of distinct valid ones only costs re-verification).
MAX_REMEMBERED = 10_000


class Authenticator:
    """HTTP Basic and bearer credentials to an `Identity`.

    A verified local login is remembered (under a keyed digest of name and password, never the
    password) together with the identity's `IdentityStore.stamp`, and trusted again only while the
    stamp is unchanged: every request still reads the identity's row, so a password reset or a
    ``disable`` by anyone (this process, the ``broker users`` command, another broker process)
    takes effect on the next request, while the slow hash is spent once per `cache_s`.
    """

    def __init__(
        self,
        *,
        admin_username: str | None,
        admin_password: str | None,
        identities: IdentityStore,
        oidc: OidcVerifier | None = None,
        cache_s: float = 300.0,
    ) -> None:
        self.admin_username = admin_username if admin_username and admin_password else None
        if self.admin_username is not None:
            owners.local(self.admin_username)  # an unusable EB_ADMIN_USERNAME fails at start
        self._admin_password = admin_password
        self.identities = identities
        self.oidc = oidc
        self._cache_s = cache_s
        self._cache_key = os.urandom(32)
        self._verified: dict[bytes, tuple[Identity, str, float]] = {}

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
        if self.admin_username is not None and username == self.admin_username:
            assert self._admin_password is not None
            if hmac.compare_digest(password.encode(), self._admin_password.encode()):
                return Identity(username, owners.local(username).token, admin=True, source="admin")
            raise AuthError(WRONG)
        key = hmac.new(self._cache_key, f"{username}\0{password}".encode(), hashlib.sha256).digest()
        cached = self._verified.get(key)
        if cached is not None and cached[2] > time.monotonic():
            if await asyncio.to_thread(self.identities.stamp, username) == cached[1]:
                return cached[0]
            del self._verified[key]
        verified = await asyncio.to_thread(self.identities.verify_stamped, username, password)
        if verified is None:
            raise AuthError(WRONG)
        found, stamp = verified
        identity = Identity(username, found.owner.token, admin=found.admin, source="local")
        if len(self._verified) >= MAX_REMEMBERED:
            self._verified.clear()
        self._verified[key] = (identity, stamp, time.monotonic() + self._cache_s)
        return identity
