"""The guard every request passes before a route: writes only from the broker's own origins, bodies
only in JSON or YAML, within the size limit (refused while they stream in); and the HTML pages, whose
assets are all the broker's own, under a Content-Security-Policy."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send

from services.offers.http.app import create_app
from services.offers.http.availability import HealthCheck
from services.offers.http.guard import RequestGuard, refusal
from services.offers.http.origins import origin_of, own_origins, parse_origins, write_refusal
from services.offers.http.settings import HttpSettings
from services.offers.store import ReadModel
from shared.models import MAX_DOCUMENT_BYTES
from tests.unit.test_http_auth import NoBus, basic

MISSING = "00000000-0000-4000-8000-000000000000"
UPDATE = b'{"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}'
OWN = frozenset({"http://127.0.0.1:8082"})


@pytest.mark.parametrize(
    ("url", "exact", "expected"),
    [
        ("http://127.0.0.1:8082", True, "http://127.0.0.1:8082"),
        ("HTTP://Broker.Example.ORG", True, "http://broker.example.org:80"),
        ("https://broker.example.org:443/", True, "https://broker.example.org:443"),
        ("https://broker.example.org/eb/", False, "https://broker.example.org:443"),
        ("https://broker.example.org/eb/", True, None),
        ("http://[::1]:8082", True, "http://[::1]:8082"),
        ("http://user@host:1", True, None),
        ("http://host:99999", True, None),
        ("ftp://host", True, None),
        ("null", True, None),
        ("", True, None),
        ("http://a.example, http://b.example", True, None),
    ],
)
def test_origins_normalise(url: str, exact: bool, expected: str | None) -> None:
    assert origin_of(url, exact=exact) == expected


def test_allowed_origins_are_checked_at_start() -> None:
    assert parse_origins(" https://a.example , http://b.example:8080,") == {
        "https://a.example:443",
        "http://b.example:8080",
    }
    for bad in ("*", "a.example", "https://a.example/path", "javascript:alert(1)"):
        with pytest.raises(ValueError, match="EB_HTTP_ALLOWED_ORIGINS"):
            parse_origins(bad)
    with pytest.raises(ValidationError, match="is not an origin"):
        HttpSettings(http_allowed_origins="https://a.example/app")


def test_own_origins() -> None:
    assert own_origins("http://127.0.0.1:8082", loopback=True) == {
        "http://127.0.0.1:8082",
        "http://localhost:8082",
        "http://[::1]:8082",
    }
    assert own_origins("https://eb.example.org/broker", loopback=False) == {"https://eb.example.org:443"}


@pytest.mark.parametrize(
    ("method", "origin", "fetch_site", "refused"),
    [
        ("POST", None, None, False),  # curl, the CLI
        ("POST", "http://127.0.0.1:8082", "same-origin", False),
        ("POST", "http://127.0.0.1:8082/", None, False),
        ("DELETE", "http://127.0.0.1:8082", None, False),
        ("POST", "http://evil.example", None, True),
        ("PUT", "http://127.0.0.1:8083", None, True),
        ("PATCH", "https://127.0.0.1:8082", None, True),
        ("POST", "null", None, True),
        ("POST", None, "cross-site", True),
        ("POST", None, "same-site", False),
        ("GET", "http://evil.example", "cross-site", False),  # reads are not writes
        ("HEAD", "null", None, False),
    ],
)
def test_write_refusal(method: str, origin: str | None, fetch_site: str | None, refused: bool) -> None:
    assert (write_refusal(method, origin, fetch_site, OWN) is not None) is refused


def test_an_allowed_origin_may_write_even_cross_site() -> None:
    allowed = OWN | parse_origins("https://portal.example")
    assert write_refusal("POST", "https://portal.example", "cross-site", allowed) is None
    reason = write_refusal("POST", "x" * 5000, None, allowed)
    assert reason is not None and len(reason) < 600  # a hostile Origin is not echoed whole


def _headers(**values: str) -> Headers:
    return Headers({name.replace("_", "-"): value for name, value in values.items()})


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/json", None),
        ("application/json; charset=utf-8", None),
        ("application/merge-patch+json", None),
        ("application/yaml", None),
        ("application/x-yaml", None),
        ("text/yaml", None),
        (None, 415),
        ("text/plain", 415),
        ("text/plain;charset=UTF-8", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("text/html", 415),
    ],
)
def test_a_body_must_be_json_or_yaml(content_type: str | None, status: int | None) -> None:
    for framing in ({"content_length": "12"}, {"transfer_encoding": "chunked"}):
        headers = _headers(**framing, **({"content_type": content_type} if content_type else {}))
        for method in ("POST", "PUT", "GET"):
            error = refusal(method, headers, OWN, MAX_DOCUMENT_BYTES)
            assert (error.status if error else None) == status, (method, framing)
            if error:
                assert error.messages[0].kind == "urn:unsupported-media-type"
                assert "application/json" in str(error.messages[0].message)
                assert "application/yaml" in str(error.messages[0].message)


def test_no_body_needs_no_content_type() -> None:
    assert refusal("POST", _headers(content_length="0"), OWN, 10) is None
    assert refusal("POST", _headers(), OWN, 10) is None


def test_a_declared_length_over_the_limit_is_refused_at_once() -> None:
    json_ = {"content_type": "application/json"}
    assert refusal("POST", _headers(content_length="10", **json_), OWN, 10) is None
    error = refusal("POST", _headers(content_length="11", **json_), OWN, 10)
    assert error is not None and (error.status, error.messages[0].kind) == (413, "urn:too-large")
    error = refusal("POST", _headers(content_length="ten", **json_), OWN, 10)
    assert error is not None and error.status == 400
    # The origin is judged first: a cross-origin write learns nothing else.
    error = refusal("POST", _headers(content_length="11", origin="http://evil.example"), OWN, 10)
    assert error is not None and error.messages[0].kind == "urn:cross-origin"


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit() -> None:
    """Plain ASGI: the guard stops pulling chunks at the first one past the limit and answers 413."""
    chunk = b"x" * 1000
    pulled = 0

    async def endless_body() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def reads_everything(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body"):
            pass
        raise AssertionError("the body never ends")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    guard = RequestGuard(reads_everything, allowed_origins=OWN, limit=10_500)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/requests",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
    }
    await guard(scope, endless_body, send)
    assert pulled == 11  # 11 000 bytes: the first chunk past 10 500, and not one more
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"urn:too-large" in sent[1]["body"]


@contextlib.asynccontextmanager
async def in_process(
    tmp_path: Path, health: HealthCheck | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    read_model = ReadModel(tmp_path / "offers.sqlite")
    await read_model.open()
    config = HttpSettings(http_port=8082, admin_username="admin", admin_password="pw", **settings)
    app = create_app(config, read_model, NoBus(), data_dir=tmp_path, health=health)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8082") as client:
            yield client
    finally:
        await read_model.close()


async def test_the_guard_answers_in_the_error_format(tmp_path: Path) -> None:
    async with in_process(tmp_path, http_allowed_origins="https://portal.example") as client:
        admin = basic("admin", "pw")
        typed = {**admin, "Content-Type": "application/json"}
        # Through the guard, the route answers: there is no such session.
        assert (await client.post(f"/sessions/{MISSING}", headers=typed, content=UPDATE)).status_code == 404
        for origin in ("http://localhost:8082", "https://portal.example"):
            answer = await client.post(
                f"/sessions/{MISSING}", headers={**typed, "Origin": origin}, content=UPDATE
            )
            assert answer.status_code == 404, origin

        plain = await client.post(
            f"/sessions/{MISSING}", headers={**admin, "Content-Type": "text/plain"}, content=UPDATE
        )
        assert plain.status_code == 415
        assert plain.json()["messages"][0]["kind"] == "urn:unsupported-media-type"
        assert plain.headers["connection"] == "close"

        evil = await client.post(
            f"/sessions/{MISSING}",
            headers={**typed, "Origin": "https://evil.example"},
            content=UPDATE,
        )
        assert evil.status_code == 403
        message = evil.json()["messages"][0]
        assert message["kind"] == "urn:cross-origin"
        assert "https://evil.example" in message["message"]
        assert "EB_HTTP_ALLOWED_ORIGINS" in message["message"]

        large = await client.post(
            f"/sessions/{MISSING}",
            headers={**typed, "Accept": "application/yaml"},
            content=b" " * (MAX_DOCUMENT_BYTES + 1),
        )
        assert large.status_code == 413
        assert "urn:too-large" in large.text and large.headers["content-type"].startswith("application/yaml")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls.extend(value for name, value in attrs if name == wanted and value)


async def test_pages_load_only_their_own_assets_under_a_csp(tmp_path: Path) -> None:
    async with in_process(tmp_path) as client:
        for page, least in (("/docs", 4), ("/", 2)):
            answer = await client.get(page)
            assert answer.status_code == 200
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "style-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy
            parser = _Assets()
            parser.feed(answer.text)
            assert len(parser.urls) >= least, parser.urls
            assert "<script>" not in answer.text  # no inline script: the policy would block it
            for url in parser.urls:
                absolute = urljoin(f"http://127.0.0.1:8082{page}", url)
                assert urlsplit(absolute).netloc == "127.0.0.1:8082", url
                asset = await client.get(absolute)
                assert asset.status_code == 200, url
                assert len(asset.content) > 100, url
        bundle = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert b"SwaggerUIBundle" in bundle.content
        assert "cdn.jsdelivr" not in (await client.get("/docs")).text
        assert (await client.get("/redoc")).status_code == 404
