"""Through the bus on the local platform: compute never starts before its mounted data is in place,
and a session still running when its booked slot ends is stopped and released."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.client import BrokerClient
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND, SIMPLE_DATA_KIND, SIMPLE_VOLUME_KIND
from shared.ops.embedded import EmbeddedBroker

PAYLOAD = b"the data arrived before the compute started\n"
DATA_DELAY_S = 2.0


class SlowData(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(DATA_DELAY_S)
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def slow_data_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowData)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/payload.txt"
    server.shutdown()


def command_request(command: list[str], duration: str, **extra: Any) -> dict[str, Any]:
    compute: dict[str, Any] = {
        "kind": SIMPLE_COMPUTE_KIND,
        "cores": {"min": 1, "max": 1},
        "memory": {"min": 1, "max": 1},
    }
    if "volumes" in extra:
        compute["volumes"] = extra.pop("volumes")
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": command},
        "compute": compute,
        "schedule": {"requested": {"duration": duration}},
        **extra,
    }


async def run_session(client: BrokerClient, request: dict[str, Any], timeout: float) -> list[Any]:
    offerset = await client.submit(request)
    assert offerset.result == "YES", offerset.meta
    assert offerset.offers and offerset.offers[0].meta
    session_id = offerset.offers[0].meta.uuid
    assert session_id is not None
    assert (await client.accept(session_id)).applied
    return await client.wait_until_done(session_id, timeout=timeout)


async def test_compute_never_starts_before_its_mounted_data_is_in_place(
    broker: EmbeddedBroker, slow_data_url: str
) -> None:
    request = command_request(
        [sys.executable, "-c", "print(open('input/payload.txt').read())"],
        "PT2M",
        data=[{"kind": SIMPLE_DATA_KIND, "meta": {"name": "payload"}, "location": slow_data_url}],
        volumes=[{"kind": SIMPLE_VOLUME_KIND, "path": "/input/payload.txt", "resource": "payload"}],
    )
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        events = await run_session(client, request, timeout=60)
    phases = {e.phase: e.at for e in events}
    assert events[-1].phase == "COMPLETED", [(e.phase, [m.message for m in e.messages]) for e in events]
    # The run started only after the slow download had finished.
    assert (phases["RUNNING"] - phases["PREPARING"]).total_seconds() >= DATA_DELAY_S * 0.9
    log = Path(events[-1].outputs["log"])
    assert PAYLOAD.decode().strip() in await asyncio.to_thread(log.read_text, encoding="utf-8")


async def test_a_session_running_past_its_slot_is_stopped_at_slot_end(broker: EmbeddedBroker) -> None:
    marker = f"{time.time_ns() % 100000 + 1000}"
    request = command_request(["sleep", marker], "PT3S")
    started = datetime.now().astimezone()
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        events = await run_session(client, request, timeout=40)
    final = events[-1]
    assert final.phase == "FAILED"
    assert any("end of its booked slot" in (m.message or "") for m in final.messages)
    assert [e.phase for e in events][-2:] == ["RELEASING", "FAILED"]
    assert (final.at - started).total_seconds() < 20
    # Really stopped: no `sleep <marker>` process is left.
    ps = await asyncio.create_subprocess_exec("ps", "-eo", "args", stdout=asyncio.subprocess.PIPE)
    listing, _ = await ps.communicate()
    assert f"sleep {marker}" not in listing.decode()
