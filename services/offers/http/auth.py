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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from shared.auth import owners
from shared.auth.identities import IdentityStore


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


class OidcVerifier:
    """Verify bearer JWTs of one issuer: signature (JWKS from its discovery document), iss, exp, aud."""

    def __init__(
        self,
        issuer: str,
        audience: str | None = None,
        *,
        cache_s: float = 600.0,
        fetch: Callable[[str], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.cache_s = cache_s
        self._fetch = fetch or self._http_get
        self._keys: jwt.PyJWKSet | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    @staticmethod
    async def _http_get(url: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(url)
            response.raise_for_status()
            data = response.json()
        if not isinstance(data, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return data

    async def _jwks(self, refresh: bool = False) -> jwt.PyJWKSet:
        async with self._lock:
            fresh = time.monotonic() - self._fetched_at < self.cache_s
            if self._keys is not None and fresh and not refresh:
                return self._keys
            config = await self._fetch(f"{self.issuer}/.well-known/openid-configuration")
            jwks_uri = config.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise ValueError("the issuer's discovery document has no jwks_uri")
            self._keys = jwt.PyJWKSet.from_dict(await self._fetch(jwks_uri))
            self._fetched_at = time.monotonic()
            return self._keys

    async def _key_for(self, kid: str | None) -> jwt.PyJWK:
        for refresh in (False, True):  # an unknown kid may be a rotated key: refetch once
            keys = await self._jwks(refresh)
            for key in keys.keys:
                if kid is None or key.key_id == kid:
                    return key
        raise AuthError("the token's signing key is not one of the issuer's")

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key_for(header.get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=[key.algorithm_name] if key.algorithm_name else ["RS256", "ES256"],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except AuthError:
            raise
        except (jwt.PyJWTError, ValueError, httpx.HTTPError) as exc:
            raise AuthError(f"invalid bearer token: {exc}") from None
        name = claims.get("preferred_username") or claims.get("sub")
        sub = claims.get("sub")
        if not isinstance(name, str) or not name or not isinstance(sub, str):
            raise AuthError("the token names no user (preferred_username or sub)")
        try:
            owner = owners.oidc(self.issuer, sub).token
        except owners.OwnerError as exc:
            raise AuthError(f"invalid bearer token: {exc}") from None
        return Identity(username=name, owner=owner, source="oidc")


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
            return await self.oidc.verify(value.strip())
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
