"""OpenID Connect bearer tokens: who a JWT access token of one configured issuer says its holder is.

`OidcVerifier.verify` checks a token as a resource server must (RFC 9068, OIDC Core §3.1.3.7):

* the header: an asymmetric ``alg`` of `ALGORITHMS` (never ``HS*``, where the public key would be
  the shared secret, nor ``none``), an optional bounded ``kid``, no ``crit`` extensions; a header's
  ``jku``, ``x5u`` or ``jwk`` is never followed, since whoever made the token chose it;
* the signature, with the key of that ``kid`` from the issuer's JWKS, found through its discovery
  document (``<issuer>/.well-known/openid-configuration`` → ``jwks_uri``), whose ``issuer`` must be
  the configured one; the key's own ``alg`` (stated or implied by its type) must be the token's;
* the claims ``exp``, ``iss``, ``sub`` and ``aud`` are required; ``iss`` is the configured issuer
  exactly; the configured audience is one of ``aud``; ``exp``, ``nbf`` and ``iat`` with `leeway_s`.

The owner is ``owners.oidc(iss, sub)``: the issuer's stable subject identifier. ``preferred_username``
is carried for display only, since a provider's user may choose any, e.g. a local user's name.

Keys are fetched on first use and again after `cache_s`, or when a token names a ``kid`` the cached
set lacks (the issuer rotated its keys). Fetches are at most one per `REFETCH_INTERVAL_S`, however
many tokens with unknown ``kid`` arrive, and concurrent callers share one fetch. When a refetch
fails, the keys already fetched serve up to `STALE_GRACE_S` longer, so a short outage of the
provider does not lock every user out.

The fetching is the shell; the checks of documents, headers and claims are pure functions below.
Every `OidcError` message is a fixed reason: it never holds the token or a claim's value.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import math
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from shared.auth import owners

log = logging.getLogger(__name__)

#: Asymmetric only: with ``HS*`` the verifier's key would be the issuer's secret.
ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "PS256"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256"})
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1"}
#: The callout accepts NATS tokens up to this size too (shared.auth.jwt.MAX_TOKEN_CHARS); an access
#: token with many groups or scopes runs to several KiB.
MAX_TOKEN_CHARS = 16 * 1024
#: A discovery document or a key set; real ones are a few KiB.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_KEYS = 100
MAX_KID_CHARS = 256
MAX_URL_CHARS = 2048
#: ``preferred_username`` is shown, never trusted: a longer one or one with control characters is dropped.
MAX_DISPLAY_CHARS = 256
MIN_RSA_BITS = 2048
#: At most one fetch of the keys per this many seconds, so tokens with made-up ``kid`` values
#: cannot make the broker hammer the provider.
REFETCH_INTERVAL_S = 30.0
#: How long past `cache_s` the keys already fetched serve while refetches fail.
STALE_GRACE_S = 3600.0
DISCOVERY_PATH = "/.well-known/openid-configuration"
_LOOPBACK_NAMES = frozenset({"localhost"})
#: Members only a private key has: a key set that publishes one is broken, and the key is not used.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

Fetch = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class OidcIdentity:
    owner: owners.Owner  # owners.oidc(verified iss, verified sub)
    sub: str
    preferred_username: str | None  # display only, never an owner
    expires: int  # the token's exp (Unix seconds)


class OidcError(Exception):
    """The token is not accepted, or the issuer's keys cannot be had; the message is a fixed,
    secret-free reason (never the token nor a claim's value)."""


# -- the functional core -----------------------------------------------------------------------------


def url_problem(url: str, *, query_allowed: bool = True) -> str | None:
    """Why `url` may not be fetched for keys (None: it may): https, or http to a loopback host (a
    provider on the same machine, a test's); no user info, no fragment."""
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return "is not a URL"
    if not host:
        return "has no host"
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        return "must be an https URL (http only to a loopback host)"
    if parts.username is not None or parts.password is not None:
        return "must not hold user information"
    if parts.fragment or "#" in url:
        return "must not have a fragment"
    if not query_allowed and (parts.query or "?" in url):
        return "must not have a query"
    if any(unicodedata.category(c) in ("Cc", "Zs") for c in url):
        return "must not contain spaces or control characters"
    return None


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def discovery_url(issuer: str) -> str:
    """OIDC Discovery §4: the issuer without a trailing ``/``, then the well-known path."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def jwks_uri_of(document: Mapping[str, Any], issuer: str) -> str:
    """The key set's address from the issuer's discovery document (which must name this issuer)."""
    if document.get("issuer") != issuer:
        raise OidcError("the discovery document names another issuer than the configured one")
    uri = document.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise OidcError("the discovery document has no jwks_uri")
    problem = url_problem(uri)
    if problem is not None:
        raise OidcError(f"the discovery document's jwks_uri {problem}")
    return uri


@dataclass(frozen=True)
class KeySet:
    """The usable signing keys of one fetch; `fetched_at` on the monotonic clock."""

    keys: tuple[jwt.PyJWK, ...]
    fetched_at: float

    def find(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        """The one key for this ``kid`` and ``alg``; without a ``kid``, the sole key of the set."""
        if kid is None:
            candidates = list(self.keys) if len(self.keys) == 1 else []
        else:
            candidates = [key for key in self.keys if key.key_id == kid]
        matching = [key for key in candidates if key.algorithm_name == alg]
        return matching[0] if len(matching) == 1 else None

    def knows(self, kid: str | None) -> bool:
        return any(key.key_id == kid for key in self.keys) if kid is not None else len(self.keys) == 1


def _may_sign(member: Any) -> bool:
    """A JWK worth handing to PyJWT: a public RSA or EC signing key with an allowed (or no) alg."""
    if not isinstance(member, dict):
        return False
    kid = member.get("kid")
    alg = member.get("alg")
    ops = member.get("key_ops")
    return (
        member.get("kty") in ("RSA", "EC")
        and member.get("use", "sig") == "sig"
        and (alg is None or alg in ALGORITHMS)
        and (kid is None or (isinstance(kid, str) and 0 < len(kid) <= MAX_KID_CHARS))
        and (ops is None or (isinstance(ops, list) and "verify" in ops))
        and not _PRIVATE_MEMBERS & member.keys()
    )


def _strong(key: jwt.PyJWK) -> bool:
    """An allowed algorithm that fits the key: RSA of `MIN_RSA_BITS` or more, EC on the alg's curve."""
    public = key.key
    if isinstance(public, RSAPublicKey):
        return key.algorithm_name in _RSA_ALGORITHMS and public.key_size >= MIN_RSA_BITS
    if isinstance(public, EllipticCurvePublicKey):
        return _EC_CURVES.get(key.algorithm_name) == public.curve.name
    return False


def key_set(document: Mapping[str, Any], fetched_at: float) -> KeySet:
    """The usable signing keys of a JWKS document: `ALGORITHMS` only (a key without ``alg`` gets
    PyJWT's default for its type: RS256 for RSA, ES256 or ES384 by curve), RSA of 2048 bits or more,
    ``use`` ``sig`` or none; other members are skipped, as RFC 7517 §5 asks."""
    members = document.get("keys")
    if not isinstance(members, list):
        raise OidcError("the issuer's key set has no list of keys")
    if len(members) > MAX_KEYS:
        raise OidcError(f"the issuer's key set has more than {MAX_KEYS} keys")
    candidates = [member for member in members if _may_sign(member)]
    if not candidates:
        raise OidcError("the issuer's key set has no usable signing key")
    try:
        parsed = jwt.PyJWKSet(candidates)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise OidcError("the issuer's key set has no usable signing key") from None
    keys = tuple(key for key in parsed.keys if _strong(key))
    if not keys:
        raise OidcError("the issuer's key set has no usable signing key")
    return KeySet(keys, fetched_at)


@dataclass(frozen=True)
class Header:
    alg: str
    kid: str | None


def read_header(token: str) -> Header:
    """The token's (unverified) header, if it is one this verifier could accept."""
    if not isinstance(token, str):
        raise OidcError("the token is not text")
    if len(token) > MAX_TOKEN_CHARS:
        raise OidcError(f"the token is longer than {MAX_TOKEN_CHARS} characters")
    if not token.isascii() or token.count(".") != 2:
        raise OidcError("the token is not a signed JWT")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise OidcError("the token is not a signed JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise OidcError(f"the token's algorithm is not one of {', '.join(sorted(ALGORITHMS))}")
    if "crit" in header or "b64" in header:
        raise OidcError("the token names critical header extensions, which are not supported")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
        raise OidcError(f"the token's kid is not a string of 1 to {MAX_KID_CHARS} characters")
    return Header(alg, kid)


def display_name(value: Any) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DISPLAY_CHARS:
        return None
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value):
        return None
    return value


def identity_of(claims: Mapping[str, Any], issuer: str) -> OidcIdentity:
    """Who verified claims name (PyJWT checked them; the types that matter are checked again here)."""
    if claims.get("iss") != issuer:
        raise OidcError("the token is from another issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise OidcError("the token's sub is not a string")
    exp = claims.get("exp")
    if (
        isinstance(exp, bool)
        or not isinstance(exp, int | float)
        or not math.isfinite(exp)
        or abs(exp) > 2**53
    ):
        raise OidcError("the token's exp is not a time")
    try:
        owner = owners.oidc(issuer, sub)
    except owners.OwnerError as exc:  # names the rule, never the value
        raise OidcError(f"the token's sub cannot be an owner: {exc}") from None
    return OidcIdentity(owner, sub, display_name(claims.get("preferred_username")), int(exp))


#: PyJWT's failures as fixed reasons, most specific first (its messages may quote the token).
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is not for this audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not allowed"),
    (jwt.InvalidIssuedAtError, "the token's iat is not a time"),
    (jwt.DecodeError, "the token is not a well-formed JWT"),
)


def reason_for(exc: Exception) -> str:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim} claim"  # one of the claim names required below
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is not valid"


def may_fetch(last_attempt: float | None, now: float, interval_s: float = REFETCH_INTERVAL_S) -> bool:
    return last_attempt is None or now - last_attempt >= interval_s


def wants_fetch(keys: KeySet | None, kid: str | None, now: float, cache_s: float) -> bool:
    """No keys yet, keys older than `cache_s`, or a ``kid`` they lack (a rotation)."""
    return keys is None or now - keys.fetched_at >= cache_s or not keys.knows(kid)


def still_usable(keys: KeySet, now: float, cache_s: float) -> bool:
    return now - keys.fetched_at < cache_s + STALE_GRACE_S


# -- the shell -------------------------------------------------------------------------------------


async def http_get_json(url: str, *, timeout_s: float) -> dict[str, Any]:
    """GET a JSON object: status 200, no redirects, no content coding, at most `MAX_DOCUMENT_BYTES`."""
    headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
    async with (
        httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        if response.status_code != 200:
            raise OidcError(f"HTTP {response.status_code}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise OidcError("the answer is compressed although it was asked not to be")
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_DOCUMENT_BYTES:
            raise OidcError(f"the answer is larger than {MAX_DOCUMENT_BYTES} bytes")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise OidcError(f"the answer is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise OidcError("the answer is not JSON") from None
    if not isinstance(document, dict):
        raise OidcError("the answer is not a JSON object")
    return document


class OidcVerifier:
    """Verify bearer JWTs of one issuer, for one audience (see the module docstring)."""

    #: Fetches of the keys are at least this far apart (a test may shorten it).
    refetch_interval_s: float = REFETCH_INTERVAL_S

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        cache_s: float = 600.0,
        leeway_s: int = 5,
        timeout_s: float = 5.0,
        fetch: Fetch | None = None,
    ) -> None:
        problem = url_problem(issuer, query_allowed=False)
        if problem is not None:
            raise ValueError(f"the OIDC issuer {problem}")
        if not isinstance(audience, str) or not audience.strip():
            raise ValueError("an OIDC audience is required: the client ID (aud) tokens for the broker carry")
        if not cache_s > 0:
            raise ValueError("cache_s must be positive")
        if not 0 <= leeway_s <= 300:
            raise ValueError("leeway_s must be from 0 to 300 seconds")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.issuer = issuer  # exactly as configured: iss must equal it
        self.audience = audience
        self.cache_s = cache_s
        self.leeway_s = leeway_s
        self.timeout_s = timeout_s
        self._fetch = fetch or functools.partial(http_get_json, timeout_s=timeout_s)
        self._keys: KeySet | None = None
        self._attempted_at: float | None = None
        self._fetch_error: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"OidcVerifier(issuer={self.issuer!r}, audience={self.audience!r})"

    async def verify(self, token: str) -> OidcIdentity:
        """The identity the token proves, or `OidcError` with why not."""
        header = read_header(token)
        key = await self._key(header)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[header.alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "sub", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise OidcError(reason_for(exc)) from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            raise OidcError("the token is not valid") from None
        return identity_of(claims, self.issuer)

    # -- keys --------------------------------------------------------------------------------------

    async def _key(self, header: Header) -> jwt.PyJWK:
        if wants_fetch(self._keys, header.kid, time.monotonic(), self.cache_s):
            await self._refetch()
        keys, now = self._keys, time.monotonic()
        if keys is None:
            raise OidcError(f"the issuer's keys are not available ({self._fetch_error or 'not fetched yet'})")
        if not still_usable(keys, now, self.cache_s):
            raise OidcError(f"the issuer's keys are out of date ({self._fetch_error or 'not refetched yet'})")
        key = keys.find(header.kid, header.alg)
        if key is not None:
            return key
        if header.kid is None:
            raise OidcError("the token names no key (kid) and the issuer has more than one")
        if keys.knows(header.kid):
            raise OidcError("the token's algorithm is not its signing key's")
        raise OidcError("the token's signing key (kid) is not one of the issuer's")

    async def _refetch(self) -> None:
        """Fetch the keys, unless a fetch is under way (then wait for it) or one was too recent."""
        if self._inflight is not None and self._inflight.get_loop() is not asyncio.get_running_loop():
            self._inflight = None  # started on a loop that has gone (a test's): it will never finish here
        if self._inflight is None:
            now = time.monotonic()
            if not may_fetch(self._attempted_at, now, self.refetch_interval_s):
                return
            self._attempted_at = now
            self._inflight = asyncio.create_task(self._fetch_keys(), name="oidc-keys")
            self._inflight.add_done_callback(self._fetched)
        # Shielded: a caller that gives up (the callout's timeout) leaves the fetch to finish for the next.
        await asyncio.shield(self._inflight)

    def _fetched(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _fetch_keys(self) -> None:
        """Never raises: a failure is logged and kept as the reason the keys are missing."""
        try:
            configuration = await self._get(discovery_url(self.issuer), "discovery document")
            jwks_uri = jwks_uri_of(configuration, self.issuer)
            self._keys = key_set(await self._get(jwks_uri, "key set"), time.monotonic())
            self._fetch_error = None
            log.info("OIDC: %d signing keys of %s fetched", len(self._keys.keys), self.issuer)
        except OidcError as exc:
            self._fetch_error = str(exc)
            log.warning("OIDC: the keys of %s could not be fetched: %s", self.issuer, exc)
        except Exception as exc:  # a bug must not leave the task's exception unretrieved
            self._fetch_error = f"fetching failed ({type(exc).__name__})"
            log.exception("OIDC: fetching the keys of %s failed", self.issuer)

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                document = await self._fetch(url)
        except OidcError as exc:
            raise OidcError(f"the issuer's {what}: {exc}") from None
        except TimeoutError:
            raise OidcError(f"the issuer's {what} did not arrive within {self.timeout_s:g} s") from None
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise OidcError(f"the issuer's {what} could not be fetched ({type(exc).__name__})") from None
        if not isinstance(document, dict):
            raise OidcError(f"the issuer's {what} is not a JSON object")
        return document
