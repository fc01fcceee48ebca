"""The CANFAR token never shows: not in a repr, a log record (with its extras) or an error message,
even when the server echoes it back in its error bodies (an in-memory server, no network)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.launcher.platforms.canfar.platform import CanfarPlatform
from shared.platforms.port import LaunchSpec, PlatformError

TOKEN = "tok-8c1d-never-show-me"
KIND = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/docker-container.yaml"


class EchoingServer:
    """Answers each request with the next status, its body quoting the Authorization header."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.seen = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return httpx.Response(status, text=f"trouble with {request.headers.get('authorization')}")


def platform(server: EchoingServer, **settings: object) -> CanfarPlatform:
    defaults = {
        "url": "https://canfar.test/skaha",
        "token": TOKEN,
        "backoff_s": 0.001,
        "max_backoff_s": 0.002,
    }
    return CanfarPlatform(**(defaults | settings), transport=httpx.MockTransport(server))


def spec(tmp_path: Path) -> LaunchSpec:
    return LaunchSpec(
        session_id="s-1",
        executable={"kind": KIND, "image": {"locations": ["images.canfar.net/x:1"]}, "command": ["true"]},
        cores=1,
        memory_gib=1,
        slot_end=datetime.now(UTC) + timedelta(hours=1),
        work_dir=tmp_path / "work",
    )


def assert_hidden(caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    assert caplog.records, "the calls should have logged something"
    for record in caplog.records:
        assert TOKEN not in record.getMessage() and TOKEN not in repr(record.__dict__)
    for text in texts:
        assert TOKEN not in text


@pytest.mark.parametrize(("statuses", "expected"), [
    ((503, 400), "CANFAR refused GET /v1/context: HTTP 400 trouble with Bearer <redacted>"),
    ((503,), "HTTP 503 trouble with Bearer <redacted>"),
    ((403,), "HTTP 403 on GET /v1/context: trouble with Bearer <redacted>"),
])  # fmt: skip
async def test_the_token_is_in_no_message_log_or_repr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, statuses: tuple[int, ...], expected: str
) -> None:
    caplog.set_level(logging.DEBUG)
    server = EchoingServer(*statuses)
    canfar = platform(server, attempts=3)
    with pytest.raises(PlatformError) as caught:
        await canfar.prepare(spec(tmp_path))
    assert expected in caught.value.message
    assert server.seen == (3 if statuses == (503,) else len(statuses))
    assert_hidden(caplog, caught.value.message, str(caught.value), repr(canfar.settings), repr(canfar))


async def test_a_token_from_a_file_is_named_by_its_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    canfar = platform(EchoingServer(401), token=None, token_file=str(token_file))
    with pytest.raises(PlatformError) as caught:
        await canfar.prepare(spec(tmp_path))
    assert f"the token file {token_file} (EB_CANFAR_TOKEN_FILE)" in caught.value.message
    assert str(token_file) in repr(canfar.settings)
    assert_hidden(caplog, caught.value.message, repr(canfar.settings))
