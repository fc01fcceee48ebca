"""A fake OpenID Connect provider, shaped like Keycloak's realm endpoints, over real HTTP.

`FakeOidcProvider()` is an ASGI app; `provider.serve()` starts it on 127.0.0.1 (tests.fakes.serve)
and fixes its issuer, ``http://127.0.0.1:<port>/realms/<realm>``. It serves, as a provider does:

  GET <issuer>/.well-known/openid-configuration   the discovery document (``issuer``, ``jwks_uri``, …)
  GET <issuer>/protocol/openid-connect/certs      the JWKS: its RSA public keys (``kid``, ``alg``, ``use``)

Its RSA keys are generated at start with `cryptography`, and tokens are signed here with them (not
with the library the broker verifies with). `mint` makes an access token as Keycloak does (``iss``,
``sub``, ``aud``, ``exp``, ``iat``, ``jti``, ``typ``, ``azp``, ``scope``, ``preferred_username``),
with any claim changed, added or dropped, signed by the current key or a foreign one (a key the
JWKS does not hold) under any ``kid``. `rotate` makes a new current key, keeping the old one in the
JWKS for tokens still in flight or dropping it.

Faults as every fake (tests/fakes/base.py, faults.py); `down`, `slow` and `bad_json` add the usual
ones. Control (not recorded, not faulted), for a test in another process:
  POST /_fake/token    {"sub", "preferred_username", "aud", "expires_in", "claims", "foreign"}
                       → {"access_token", "token_type"}
  POST /_fake/rotate   {"keep_previous": true} → {"kid": <the new current kid>}
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeServer
from tests.fakes.serve import serve_asgi

DEFAULT_AUDIENCE = "execution-broker"
DISCOVERY = "/.well-known/openid-configuration"
CERTS = "/protocol/openid-connect/certs"
#: `mint`'s default for `kid`: the signing key's own.
SIGNING_KID = "<the signing key's kid>"

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
    "PS256": hashes.SHA256,
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey
    alg: str = "RS256"

    @classmethod
    def generate(cls, bits: int = 2048, alg: str = "RS256") -> SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        return cls(secrets.token_urlsafe(24), private, alg)

    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kid": self.kid,
            "kty": "RSA",
            "alg": self.alg,
            "use": "sig",
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
        }

    def sign(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """A JWS compact serialisation; `header["alg"]` picks the padding and hash (RS*, PS256)."""
        alg = header["alg"]
        signing_input = ".".join(
            b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        digest = _HASHES[alg]()
        scheme: padding.AsymmetricPadding
        if alg.startswith("PS"):
            scheme = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        else:
            scheme = padding.PKCS1v15()
        signature = self.private.sign(signing_input.encode("ascii"), scheme, digest)
        return f"{signing_input}.{b64url(signature)}"


class FakeOidcProvider(FakeServer):
    #: An identity provider's errors are JSON; an injected string body (bad JSON) goes out as JSON too.
    fault_media_type = "application/json"

    def __init__(self, realm: str = "science", *, key_bits: int = 2048, alg: str = "RS256") -> None:
        self.realm = realm
        self.base_url: str | None = None
        #: The `issuer` the discovery document names (None: the real one); a test sets another.
        self.advertised_issuer: str | None = None
        #: Where the discovery document says the JWKS is (None: this provider's certs endpoint).
        self.advertised_jwks_uri: str | None = None
        #: The size and the JWKS ``alg`` of every key this provider makes.
        self._key_bits = key_bits
        self._alg = alg
        self._lock = threading.Lock()
        self._current = SigningKey.generate(key_bits, alg)
        self._published: tuple[SigningKey, ...] = (self._current,)
        self.foreign = SigningKey.generate(key_bits, alg)
        prefix = f"/realms/{realm}"
        super().__init__(
            Starlette(
                routes=[
                    Route(prefix + DISCOVERY, self._discovery, methods=["GET"]),
                    Route(prefix + CERTS, self._certs, methods=["GET"]),
                ]
            ),
            control=[
                Route("/_fake/token", self._token, methods=["POST"]),
                Route("/_fake/rotate", self._rotate, methods=["POST"]),
            ],
        )

    # -- serving ---------------------------------------------------------------------------------

    def serve(self) -> Callable[[], None]:
        """Start on 127.0.0.1:<free port>; the function returned stops it."""
        base_url, stop = serve_asgi(self)
        self.base_url = base_url
        return stop

    @contextlib.contextmanager
    def serving(self) -> Iterator[FakeOidcProvider]:
        """Serve for the length of a ``with`` block (a fixture's life)."""
        stop = self.serve()
        try:
            yield self
        finally:
            stop()

    @property
    def issuer(self) -> str:
        if self.base_url is None:
            raise RuntimeError("the provider has no issuer until it is served")
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def jwks_path(self) -> str:
        return f"/realms/{self.realm}{CERTS}"

    @property
    def discovery_path(self) -> str:
        return f"/realms/{self.realm}{DISCOVERY}"

    async def fetch(self, url: str) -> dict[str, Any]:
        """GET `url` through this app in process, no socket: an `OidcVerifier`'s `fetch` for tests
        that need the provider's documents but not the HTTP client (set `base_url` first)."""
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self)) as client:
            response = await client.get(url)
            response.raise_for_status()
            document: dict[str, Any] = response.json()
            return document

    # -- keys and tokens -------------------------------------------------------------------------

    @property
    def current(self) -> SigningKey:
        with self._lock:
            return self._current

    def published(self) -> tuple[SigningKey, ...]:
        with self._lock:
            return self._published

    def rotate(self, *, keep_previous: bool = True) -> SigningKey:
        """A new current key, first in the JWKS; the previous ones stay only if `keep_previous`."""
        new = SigningKey.generate(self._key_bits, self._alg)
        with self._lock:
            self._published = (new, *self._published) if keep_previous else (new,)
            self._current = new
        return new

    def mint(
        self,
        sub: str = "f6a0c3e2-5b1d-4c1e-9a8f-2d7b3c4e5f60",
        *,
        preferred_username: str | None = None,
        aud: str | list[str] | None = DEFAULT_AUDIENCE,
        expires_in: float = 300.0,
        issuer: str | None = None,
        claims: Mapping[str, Any] | None = None,
        drop: Iterable[str] = (),
        foreign: bool = False,
        kid: str | None = SIGNING_KID,
        alg: str | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """An access token as this provider issues them; `claims` change or add claims, `drop`
        removes some, `foreign` signs with a key the JWKS does not hold, `kid` None sends none, `alg`
        signs with another algorithm than the key's (RS256, RS384, RS512, PS256)."""
        now = int(time.time())
        body: dict[str, Any] = {
            "exp": int(now + expires_in),
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": issuer or self.issuer,
            "aud": aud,
            "sub": sub,
            "typ": "Bearer",
            "azp": DEFAULT_AUDIENCE,
            "scope": "openid profile email",
            "preferred_username": preferred_username,
            **(claims or {}),
        }
        for name in drop:
            body.pop(name, None)
        body = {name: value for name, value in body.items() if value is not None}
        key = self.foreign if foreign else self.current
        head: dict[str, Any] = {"alg": alg or key.alg, "typ": "JWT"}
        if kid is not None:
            head["kid"] = key.kid if kid == SIGNING_KID else kid
        return key.sign({**head, **(header or {})}, body)

    # -- faults ----------------------------------------------------------------------------------

    def down(self, *, times: int | None = None, status: int = 503) -> None:
        """Every API request answers `status` (a proxy in front of a stopped provider)."""
        self.add_fault({"match": {"path": "*"}, "status": status, "times": times})

    def slow(self, delay_s: float, *, path: str = "*", times: int | None = None) -> None:
        self.add_fault({"match": {"path": path}, "delay_s": delay_s, "times": times})

    def bad_json(self, path: str = "*", *, body: str = '{"keys": [', times: int | None = None) -> None:
        """A 200 whose body is not JSON (cut off, as by a proxy)."""
        self.add_fault({"match": {"path": path}, "status": 200, "body": body, "times": times})

    # -- the API ---------------------------------------------------------------------------------

    async def _discovery(self, request: Request) -> Response:
        issuer = self.issuer
        return JSONResponse({
            "issuer": self.advertised_issuer or issuer,
            "authorization_endpoint": f"{issuer}/protocol/openid-connect/auth",
            "token_endpoint": f"{issuer}/protocol/openid-connect/token",
            "userinfo_endpoint": f"{issuer}/protocol/openid-connect/userinfo",
            "jwks_uri": self.advertised_jwks_uri or f"{issuer}{CERTS}",
            "response_types_supported": ["code", "id_token", "code id_token"],
            "subject_types_supported": ["public", "pairwise"],
            "id_token_signing_alg_values_supported": ["RS256", "RS384", "RS512", "PS256", "ES256"],
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        })  # fmt: skip

    async def _certs(self, request: Request) -> Response:
        return JSONResponse({"keys": [key.jwk() for key in self.published()]})

    # -- control ---------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        spec = await request.json()
        token = self.mint(
            spec.get("sub", "f6a0c3e2-5b1d-4c1e-9a8f-2d7b3c4e5f60"),
            preferred_username=spec.get("preferred_username"),
            aud=spec.get("aud", DEFAULT_AUDIENCE),
            expires_in=float(spec.get("expires_in", 300)),
            claims=spec.get("claims"),
            foreign=bool(spec.get("foreign", False)),
        )
        return JSONResponse({"access_token": token, "token_type": "Bearer"})

    async def _rotate(self, request: Request) -> Response:
        spec = await request.json() if await request.body() else {}
        return JSONResponse({"kid": self.rotate(keep_previous=bool(spec.get("keep_previous", True))).kid})
