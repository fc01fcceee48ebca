"""The HTTP layer's pure parts: owner tokens, content negotiation, password hashes, event tokens,
OIDC bearer tokens (with an in-memory issuer), and the app's auth rules on an in-process server."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from services.offers.http.app import create_app
from services.offers.http.auth import (
    AuthError,
    EventTokens,
    Identity,
    OidcVerifier,
    hash_password,
    owner_token,
    verify_password,
)
from services.offers.http.negotiation import Format, response_format
from services.offers.http.settings import HttpSettings
from services.offers.store import ReadModel
from shared.subjects import is_token

ISSUER = "https://issuer.example"


def test_owner_tokens_are_safe_and_injective() -> None:
    names = ["alice", "a.b", "a_b", "a=2Eb", "bob smith", "é", "x*y>", "", "a=b"]
    tokens = [owner_token(n) for n in names]
    assert all(is_token(t) for t in tokens)
    assert len(set(tokens)) == len(names)
    assert owner_token("alice") == "alice"


@pytest.mark.parametrize(
    ("accept", "content_type", "expected"),
    [
        (None, None, Format.YAML),
        ("*/*", None, Format.YAML),
        (None, "application/json", Format.JSON),
        ("application/json", "application/yaml", Format.JSON),
        ("text/yaml", "application/json", Format.YAML),
        ("application/yml", None, Format.YAML),
        ("text/yml", None, Format.YAML),
        ("application/vnd.eb+yaml", None, Format.YAML),
        ("application/yaml;q=0.5, application/json", None, Format.JSON),
        ("text/html", "text/yaml", Format.YAML),
    ],
)
def test_response_format(accept: str | None, content_type: str | None, expected: Format) -> None:
    assert response_format(accept, content_type) is expected


def test_password_hashes_verify_and_differ() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second  # salted
    assert verify_password("s3cret", first)
    assert not verify_password("wrong", first)
    assert not verify_password("s3cret", "garbage")


def test_event_tokens_expire_and_cannot_be_forged() -> None:
    tokens = EventTokens("secret", ttl_s=60)
    token, _ = tokens.issue(Identity("alice", "alice"), now=1000)
    assert tokens.verify(token, now=1030).owner == "alice"
    with pytest.raises(AuthError):
        tokens.verify(token, now=1061)
    with pytest.raises(AuthError):
        EventTokens("other", ttl_s=60).verify(token, now=1030)
    body, _, signature = token.partition(".")
    with pytest.raises(AuthError):
        tokens.verify(body[:-2] + "xx." + signature, now=1030)


class FakeIssuer:
    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]}
        self.fetches = 0

    async def fetch(self, url: str) -> dict[str, Any]:
        self.fetches += 1
        if url == f"{ISSUER}/.well-known/openid-configuration":
            return {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}
        assert url == f"{ISSUER}/jwks"
        return self.jwks

    def token(self, **claims: Any) -> str:
        body = {"iss": ISSUER, "sub": "s-123", "exp": int(time.time()) + 60, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})


async def test_oidc_tokens_are_verified() -> None:
    issuer = FakeIssuer()
    verifier = OidcVerifier(ISSUER, "broker", fetch=issuer.fetch)
    identity = await verifier.verify(issuer.token(aud="broker", preferred_username="carol.c"))
    assert (identity.username, identity.owner, identity.source) == ("carol.c", "carol=2Ec", "oidc")
    assert (await verifier.verify(issuer.token(aud="broker"))).username == "s-123"
    assert issuer.fetches == 2  # the JWKS is cached
    for bad in (
        issuer.token(aud="other"),
        issuer.token(aud="broker", iss="https://evil.example"),
        issuer.token(aud="broker", exp=int(time.time()) - 120),
        issuer.token(aud="broker") + "x",
    ):
        with pytest.raises(AuthError):
            await verifier.verify(bad)


class NoBus:
    async def submit(self, owner: str, raw: bytes, request_id: str) -> Any:
        raise AssertionError("no bus in this test")

    async def update(self, owner: str, session_id: str, phase: Any) -> Any:
        raise AssertionError("no bus in this test")

    def event_queue(self) -> Any:
        raise AssertionError("no bus in this test")

    async def history(self, session_id: str) -> list[Any]:
        return []


@contextlib.asynccontextmanager
async def app_client(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, FakeIssuer]]:
    read_model = ReadModel(tmp_path / "offers.sqlite")
    await read_model.open()
    issuer = FakeIssuer()
    config = HttpSettings(http_port=1, admin_username="admin", admin_password="pw", **settings)
    app = create_app(config, read_model, NoBus(), oidc=OidcVerifier(ISSUER, fetch=issuer.fetch))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, issuer
    finally:
        await read_model.close()


def basic(user: str, password: str) -> dict[str, str]:
    value = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {value}", "Accept": "application/json"}


async def test_identities_basic_and_bearer_auth(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, issuer):
        admin = basic("admin", "pw")
        created = await client.post(
            "/admin/identities", json={"username": "dave", "password": "x"}, headers=admin
        )
        assert created.status_code == 201
        assert set(created.json()) == {"uuid", "username"}
        again = await client.post(
            "/admin/identities", json={"username": "dave", "password": "y"}, headers=admin
        )
        assert again.status_code == 409
        missing = await client.post("/admin/identities", json={"username": "erin"}, headers=admin)
        assert missing.status_code == 400
        assert missing.json()["messages"][0]["message"]
        not_admin = await client.post(
            "/admin/identities", json={"username": "f", "password": "g"}, headers=basic("dave", "x")
        )
        assert not_admin.status_code == 403

        me = await client.get("/whoami", headers=basic("dave", "x"))
        assert me.json()["owner"] == "dave"
        wrong = await client.get("/whoami", headers=basic("dave", "nope"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic")
        assert "Bearer" in wrong.headers["www-authenticate"]

        bearer = {
            "Authorization": f"Bearer {issuer.token(preferred_username='gina')}",
            "Accept": "application/json",
        }
        assert (await client.get("/whoami", headers=bearer)).json()["username"] == "gina"
        assert (await client.get("/sessions", headers=bearer)).json() == {"sessions": []}
        anonymous = await client.get("/sessions/00000000-0000-4000-8000-000000000000")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"].startswith("application/yaml")
        no_accept = {"Authorization": basic("dave", "x")["Authorization"]}
        token = (await client.post("/events/token", headers=no_accept)).text
        assert token.startswith("token:")  # YAML: the request named no type


async def test_public_reads(tmp_path: Path) -> None:
    async with app_client(tmp_path, public_reads=True) as (client, _):
        missing = await client.get(
            "/sessions/00000000-0000-4000-8000-000000000000", headers={"Accept": "application/json"}
        )
        assert missing.status_code == 404
        assert missing.json()["messages"][0]["kind"] == "urn:not-found"
        bad_id = await client.get("/offersets/not-a-uuid", headers={"Accept": "application/json"})
        assert bad_id.status_code == 422
