"""The HTTP API's defences against the real server (uvicorn inside the offers service, as `broker up`
runs it): bodies only in JSON or YAML, writes only from the broker's own origins, a body past the
limit cut off while it is still arriving, failed logins limited, and /docs with nothing from a CDN."""

from __future__ import annotations

import base64
import select
import socket
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from shared.models import MAX_DOCUMENT_BYTES
from tests.e2e.http_support import ADMIN, ALICE, JSON, HttpBroker, start_http_broker

MISSING = "00000000-0000-4000-8000-000000000000"
UPDATE = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
PER_USER, PER_ADDRESS = 3, 8


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    running = start_http_broker(
        tmp_path_factory.mktemp("http-hardening"),
        EB_LOGIN_FAILURES_PER_USER=str(PER_USER),
        EB_LOGIN_FAILURES_PER_ADDRESS=str(PER_ADDRESS),
        EB_HTTP_ALLOWED_ORIGINS="https://portal.example",
    )
    try:
        yield running
    finally:
        running.broker.stop()


def _kind(response: httpx.Response) -> str:
    kind = response.json()["messages"][0]["kind"]
    assert isinstance(kind, str)
    return kind


def test_a_body_must_be_json_or_yaml(http: HttpBroker) -> None:
    body = b'{"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}'
    with http.client() as alice:
        for content_type in ("application/json", "application/yaml", "text/yaml", "application/x-yaml"):
            passed = alice.post(
                f"/sessions/{MISSING}",
                content=body,
                headers={"Content-Type": content_type, "Accept": "application/json"},
            )
            assert passed.status_code == 404, (content_type, passed.text)  # past the guard: no such session
        refused_types: tuple[str | None, ...] = (
            None,
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
        )
        for refused_type in refused_types:
            headers = {
                "Accept": "application/json",
                **({"Content-Type": refused_type} if refused_type else {}),
            }
            refused = alice.post(f"/sessions/{MISSING}", content=body, headers=headers)
            assert refused.status_code == 415, refused_type
            assert _kind(refused) == "urn:unsupported-media-type"
            assert "application/json" in refused.json()["messages"][0]["message"]
        # Every route, even one that reads no body.
        token = alice.post(
            "/events/token", content=b"x=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert token.status_code == 415
        assert alice.post("/events/token", headers=JSON).status_code == 200  # no body, no type needed


def test_writes_only_from_the_brokers_own_origins(http: HttpBroker) -> None:
    own = http.base_url
    with http.client() as alice:

        def update(**headers: str) -> httpx.Response:
            return alice.post(f"/sessions/{MISSING}", json=UPDATE, headers={**JSON, **headers})

        assert update().status_code == 404  # the CLI, curl: no Origin
        assert update(Origin=own, **{"Sec-Fetch-Site": "same-origin"}).status_code == 404
        assert update(Origin="https://portal.example").status_code == 404  # EB_HTTP_ALLOWED_ORIGINS
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": own.replace("127.0.0.1", "127.0.0.2")},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ):
            refused = update(**headers)
            assert refused.status_code == 403, headers
            assert _kind(refused) == "urn:cross-origin"
        evil = update(Origin="http://evil.example").json()["messages"][0]["message"]
        assert "http://evil.example" in evil and own in evil
        # Reads are not refused: the browser keeps another origin from seeing the answer anyway.
        assert alice.get("/sessions", headers={**JSON, "Origin": "http://evil.example"}).status_code == 200


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _open(http: HttpBroker, head: str) -> socket.socket:
    where = urlsplit(http.base_url)
    sock = socket.create_connection((where.hostname, where.port), timeout=10)
    sock.sendall(
        (
            f"POST /requests HTTP/1.1\r\nHost: {where.netloc}\r\n"
            f"Authorization: Basic {_basic(*ALICE)}\r\nAccept: application/json\r\n"
            f"Content-Type: application/json\r\n{head}\r\n"
        ).encode()
    )
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except (ConnectionResetError, TimeoutError):
        pass  # closed with the rest of our body unread: the answer came before
    return answer


def test_a_chunked_body_past_the_limit_is_cut_off_while_it_streams(http: HttpBroker) -> None:
    total = 256 * 1024 * 1024  # 256 times the limit: far more than any socket buffers hold
    piece = b"x" * 65536
    frame = b"%x\r\n" % len(piece) + piece + b"\r\n"
    sock = _open(http, "Transfer-Encoding: chunked\r\n")
    sent = 0
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:  # the server answered before we finished
                break
            sock.sendall(frame)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection on the rest of the body
    answer = _read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"connection: close" in answer.lower()
    assert b"urn:too-large" in answer
    # Past the limit the server read on only what was already in flight (flow control, kernel buffers).
    assert MAX_DOCUMENT_BYTES < sent < 32 * 1024 * 1024, sent


def test_a_declared_length_past_the_limit_is_refused_before_any_body(http: HttpBroker) -> None:
    sock = _open(http, f"Content-Length: {1024 * 1024 * 1024}\r\n")
    started = time.monotonic()
    answer = _read_answer(sock)  # we send no byte of the body
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"1073741824" in answer and time.monotonic() - started < 5


def test_failed_logins_are_limited_per_user_and_per_address(http: HttpBroker) -> None:
    with http.client(ADMIN) as admin:
        for name in ("carol", "dan"):
            assert (
                admin.post("/admin/identities", json={"username": name, "password": "pw-" + name}).status_code
                == 201
            )
    with http.client(None) as client:

        def whoami(user: str, password: str, address: str | None = None) -> httpx.Response:
            # uvicorn takes the client's address from X-Forwarded-For when the peer is 127.0.0.1 (a
            # proxy on the same host): how this test stands for clients at several addresses.
            forwarded = {"X-Forwarded-For": address} if address else {}
            return client.get("/whoami", auth=(user, password), headers={**JSON, **forwarded})

        for _ in range(PER_USER):
            assert whoami("carol", "guess").status_code == 401
        for password in ("guess", "pw-carol"):
            refused = whoami("carol", password)
            assert refused.status_code == 429
            assert _kind(refused) == "urn:too-many-login-failures"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert whoami("dan", "pw-dan").status_code == 200  # another name from the same address

        # One address failing against many names is stopped too, and only that address.
        for index in range(PER_ADDRESS):
            assert whoami(f"nobody{index}", "guess", "203.0.113.7").status_code == 401
        blocked = whoami("dan", "pw-dan", "203.0.113.7")
        assert blocked.status_code == 429
        assert "from this address" in blocked.json()["messages"][0]["message"]
        # dan's own success elsewhere forgives nothing at 203.0.113.7.
        assert whoami("dan", "pw-dan", "198.51.100.1").status_code == 200
        assert whoami("dan", "pw-dan", "203.0.113.7").status_code == 429


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls.extend(value for name, value in attrs if name == wanted and value)


def test_docs_and_dashboard_load_only_the_brokers_own_assets(http: HttpBroker) -> None:
    own = urlsplit(http.base_url).netloc
    with http.client(None) as anonymous:
        for page in ("/docs", "/"):
            answer = anonymous.get(page)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in answer.headers["content-security-policy"]
            parser = _Assets()
            parser.feed(answer.text)
            assert parser.urls, page
            for url in parser.urls:
                absolute = urljoin(http.base_url + page, url)
                assert urlsplit(absolute).netloc == own, url
                asset = anonymous.get(absolute)
                assert asset.status_code == 200, url
        swagger = anonymous.get("/docs/assets/swagger-ui-bundle.js")
        assert swagger.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert len(swagger.content) > 100_000
