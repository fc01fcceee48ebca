"""The HTTP layer's auth: content negotiation, event-stream tokens and their key, OIDC bearer tokens
(the fake provider in process), and the app's auth rules and admin API on an in-process server."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from pydantic import ValidationError

from services.offers.http.app import create_app
from services.offers.http.auth import Authenticator, AuthError, Identity
from services.offers.http.negotiation import Format, response_format
from services.offers.http.settings import HttpSettings
from services.offers.http.tokens import AUDIENCE, EventTokens, event_secret, stored_secret
from services.offers.store import ReadModel
from shared.auth import owners
from shared.auth.identities import store_in
from shared.auth.oidc import OidcVerifier
from tests.fakes.oidc import FakeOidcProvider

ISSUER_BASE = "https://issuer.example"
OIDC_AUDIENCE = "broker"


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


# -- event-stream tokens ------------------------------------------------------------------------------

SECRET = b"k" * 32
ALICE = Identity("alice", owners.local("alice").token)


def test_an_event_token_names_its_identity() -> None:
    tokens = EventTokens(SECRET, ttl_s=60)
    for identity in (
        ALICE,
        Identity("root", owners.local("root").token, admin=True, source="admin"),
        Identity("carol.c", owners.oidc(ISSUER_BASE, "s-123").token, source="oidc"),
    ):
        token, expires = tokens.issue(identity)
        assert tokens.verify(token) == identity
        assert expires - time.time() == pytest.approx(60, abs=2)
    claims = jwt.decode(tokens.issue(ALICE)[0], SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == "local:alice"
    assert {"sub", "name", "adm", "src", "iat", "exp", "aud"} == set(claims)


def forged(
    secret: bytes = SECRET, algorithm: str = "HS256", drop: str = "", expires_in: int = 60, **changes: Any
) -> str:
    now = int(time.time())
    claims = {"sub": "local:alice", "name": "alice", "adm": False, "src": "local"}
    claims |= {"iat": now, "exp": now + expires_in, "aud": AUDIENCE, **changes}
    claims.pop(drop, None)
    with warnings.catch_warnings():  # HS512 with a 32-byte key: weak, and meant to be refused anyway
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret if algorithm != "none" else "", algorithm=algorithm)


# The tokens are made when each test runs (at collection they would have expired by then).
@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"expires_in": -30}, "expired"),
        ({"aud": "execution-broker/other"}, "invalid"),
        ({"secret": b"o" * 32}, "invalid"),
        ({"algorithm": "none"}, "invalid"),
        ({"algorithm": "HS512"}, "invalid"),
        ({"drop": "adm"}, "invalid"),
        ({"drop": "iat"}, "invalid"),
        ({"drop": "aud"}, "invalid"),
        ({"adm": "yes"}, "invalid"),
        ({"src": "root"}, "invalid"),
        ({"sub": "alice"}, "invalid"),
        ({"sub": "local:"}, "invalid"),
        ("not.a.token", "invalid"),
    ],
)
def test_event_tokens_refused(forgery: dict[str, Any] | str, reason: str) -> None:
    token = forgery if isinstance(forgery, str) else forged(**forgery)
    with pytest.raises(AuthError, match=reason):
        EventTokens(SECRET, ttl_s=60).verify(token)


def test_a_tampered_event_token_is_refused() -> None:
    tokens = EventTokens(SECRET, ttl_s=60)
    token, _ = tokens.issue(ALICE)
    header, body, signature = token.split(".")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    admin = base64.urlsafe_b64encode(json.dumps({**claims, "adm": True}).encode()).rstrip(b"=")
    with pytest.raises(AuthError, match="invalid"):
        tokens.verify(f"{header}.{admin.decode()}.{signature}")
    assert tokens.verify(f"{header}.{body}.{signature}") == ALICE


def test_a_little_clock_skew_is_forgiven() -> None:
    tokens = EventTokens(SECRET, ttl_s=60)
    assert tokens.verify(forged(exp=int(time.time()) - 2)).username == "alice"


def test_the_event_secret_is_kept_in_the_data_dir(tmp_path: Path) -> None:
    first = event_secret(None, tmp_path)
    path = tmp_path / "http-secret"
    assert len(first) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert event_secret(None, tmp_path) == first  # a restart reads the same one
    assert [p.name for p in tmp_path.iterdir()] == ["http-secret"]  # no temporary left behind
    token, _ = EventTokens(first, 60).issue(ALICE)
    assert EventTokens(event_secret(None, tmp_path), 60).verify(token) == ALICE
    assert event_secret("x" * 32, tmp_path) == b"x" * 32  # EB_HTTP_SECRET wins
    assert stored_secret(tmp_path / "other") != first


def test_bad_event_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="EB_HTTP_SECRET must be at least 32 bytes"):
        event_secret("short", tmp_path)
    path = tmp_path / "http-secret"
    path.write_text("zz\n")
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not hold a hex secret"):
        stored_secret(path)
    path.write_text("abcd\n")
    with pytest.raises(ValueError, match="fewer than 32 bytes"):
        stored_secret(path)
    path.write_text("ab" * 32)
    path.chmod(0o644)
    with pytest.raises(ValueError, match="chmod 600"):
        stored_secret(path)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        EventTokens(b"short", 60)


def oidc_provider() -> tuple[FakeOidcProvider, OidcVerifier]:
    provider = FakeOidcProvider()
    provider.base_url = ISSUER_BASE  # in process: the verifier fetches through its ASGI app
    return provider, OidcVerifier(provider.issuer, OIDC_AUDIENCE, fetch=provider.fetch)


async def test_an_oidc_user_is_owned_by_issuer_and_sub_never_by_its_preferred_username(
    tmp_path: Path,
) -> None:
    provider, verifier = oidc_provider()
    auth = Authenticator(
        admin_username=None, admin_password=None, identities=store_in(tmp_path), oidc=verifier
    )
    alice = await auth.identify(
        f"Bearer {provider.mint('s-123', preferred_username='alice', aud=OIDC_AUDIENCE)}"
    )
    assert alice is not None
    assert alice.owner == owners.oidc(provider.issuer, "s-123").token
    assert alice.owner not in {"alice", owners.local("alice").token}
    assert (alice.username, alice.source, alice.admin) == ("alice", "oidc", False)
    nameless = await auth.identify(f"bearer {provider.mint('s-123', aud=OIDC_AUDIENCE)}")
    assert nameless is not None
    assert (nameless.username, nameless.owner) == ("s-123", alice.owner)
    for bad in (
        provider.mint(aud="other"),
        provider.mint(aud=OIDC_AUDIENCE, issuer="https://evil.example"),
        provider.mint(aud=OIDC_AUDIENCE, expires_in=-120),
        provider.mint(aud=OIDC_AUDIENCE, foreign=True),
        provider.mint(aud=OIDC_AUDIENCE) + "x",
    ):
        with pytest.raises(AuthError) as caught:
            await auth.identify(f"Bearer {bad}")
        assert caught.value.reason.startswith("invalid bearer token: ")
        assert bad.split(".")[1] not in caught.value.reason


def test_an_issuer_needs_an_audience() -> None:
    with pytest.raises(ValidationError, match="EB_OIDC_AUDIENCE must be set") as caught:
        HttpSettings(oidc_issuer=ISSUER_BASE, admin_password="hunter2")
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ValidationError, match="EB_OIDC_AUDIENCE must be set"):
        HttpSettings(oidc_issuer=ISSUER_BASE, oidc_audience=" ")
    with pytest.raises(ValidationError, match="EB_OIDC_ISSUER must be an https URL"):
        HttpSettings(oidc_issuer="http://issuer.example", oidc_audience=OIDC_AUDIENCE)
    assert HttpSettings(oidc_audience=OIDC_AUDIENCE).oidc_issuer is None  # an audience alone is harmless


async def test_the_app_builds_its_verifier_from_the_settings(tmp_path: Path) -> None:
    read_model = ReadModel(tmp_path / "offers.sqlite")
    config = HttpSettings(oidc_issuer=ISSUER_BASE, oidc_audience=OIDC_AUDIENCE, oidc_leeway_s=30)
    verifier = create_app(config, read_model, NoBus(), data_dir=tmp_path).state.ctx.auth.oidc
    assert isinstance(verifier, OidcVerifier)
    assert (verifier.issuer, verifier.audience, verifier.leeway_s) == (ISSUER_BASE, OIDC_AUDIENCE, 30)
    assert create_app(HttpSettings(), read_model, NoBus(), data_dir=tmp_path).state.ctx.auth.oidc is None


class NoBus:
    async def submit(self, owner: str, raw: bytes, request_id: str) -> Any:
        raise AssertionError("no bus in this test")

    async def update(self, owner: str, session_id: str, phase: Any, timeout: float) -> Any:
        raise AssertionError("no bus in this test")

    def event_queue(self) -> Any:
        raise AssertionError("no bus in this test")

    async def history(self, session_id: str) -> list[Any]:
        return []


@contextlib.asynccontextmanager
async def app_client(
    tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeOidcProvider]]:
    read_model = ReadModel(tmp_path / "offers.sqlite")
    await read_model.open()
    issuer, verifier = oidc_provider()
    config = HttpSettings(http_port=1, admin_username="admin", admin_password="pw", **settings)
    app = create_app(config, read_model, NoBus(), data_dir=tmp_path, oidc=verifier)
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
        assert created.json() == {"username": "dave", "admin": False, "disabled": False}
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
        assert me.json()["owner"] == owners.local("dave").token == "local==dave"
        wrong = await client.get("/whoami", headers=basic("dave", "nope"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Basic")
        assert "Bearer" in wrong.headers["www-authenticate"]

        bearer = {
            "Authorization": f"Bearer {issuer.mint('g-1', preferred_username='gina', aud=OIDC_AUDIENCE)}",
            "Accept": "application/json",
        }
        me = (await client.get("/whoami", headers=bearer)).json()
        assert (me["username"], me["owner"]) == ("gina", owners.oidc(issuer.issuer, "g-1").token)
        posing = issuer.mint("g-2", preferred_username="dave", aud=OIDC_AUDIENCE)
        me = (await client.get("/whoami", headers={**bearer, "Authorization": f"Bearer {posing}"})).json()
        assert (me["username"], me["owner"]) == ("dave", owners.oidc(issuer.issuer, "g-2").token)
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
