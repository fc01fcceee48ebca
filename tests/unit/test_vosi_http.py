"""GET /capabilities and /availability in process: public, text/xml, valid, and the availability
probe asks the bus at most once per service per cache period, however often it is asked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

from services.offers.http.availability import SERVICES, AvailabilityProbe
from shared.ivoa import documents
from tests.ivoa_schemas import validate
from tests.unit.test_http_guard import in_process

NS = {"v": documents.VOSI_AVAILABILITY_NS}


class FakeServices:
    """Health answers of the three services: those in `down` do not answer."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.asked: list[str] = []

    async def __call__(self, service: str, timeout: float) -> bool:
        self.asked.append(service)
        if service == "launcher" and "launcher-error" in self.down:
            raise ConnectionError("reconnecting")
        return service not in self.down


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_capabilities_are_public_and_follow_the_configuration(tmp_path: Path) -> None:
    settings = {"ivoid": "ivo://example.org/eb", "public_url": "https://eb.example.org/"}
    async with in_process(tmp_path, FakeServices(), public_reads=True, **settings) as client:
        answer = await client.get("/capabilities")  # no credentials
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/xml")
    assert answer.headers["x-content-type-options"] == "nosniff"
    validate("capabilities", answer.content)
    root = ET.fromstring(answer.content)
    urls = [u.text for u in root.iter("accessURL")]
    assert urls == [
        "https://eb.example.org/capabilities",
        "https://eb.example.org/availability",
        "https://eb.example.org",
    ]
    methods = [m.get("standardID") for m in root.iter("securityMethod")]
    assert methods == [documents.BASIC_AA, None]  # no OIDC issuer: no bearer tokens; public reads
    assert b"pw" not in answer.content and b"admin" not in answer.content


async def test_availability_is_public(tmp_path: Path) -> None:
    async with in_process(tmp_path, FakeServices()) as client:
        up = await client.get("/availability")  # no credentials
        minimal = await client.get("/availability", params={"detail": "min"})
        wrong = await client.get("/availability", params={"detail": "<x>"})
    assert up.status_code == 200 and up.headers["content-type"].startswith("text/xml")
    validate("availability", up.content)
    root = ET.fromstring(up.content)
    assert root.findtext("v:available", namespaces=NS) == "true"
    assert root.findtext("v:upSince", namespaces=NS)
    assert (minimal.status_code, minimal.content) == (200, b"")
    assert wrong.status_code == 422


async def test_availability_says_which_service_is_silent(tmp_path: Path) -> None:
    services = FakeServices()
    services.down = {"scheduler"}
    async with in_process(tmp_path, services) as client:
        down = await client.get("/availability")
        minimal = await client.get("/availability", params={"detail": "min"})
    assert down.status_code == 200  # as cadc-vosi: the document says it
    validate("availability", down.content)
    root = ET.fromstring(down.content)
    assert root.findtext("v:available", namespaces=NS) == "false"
    assert root.findtext("v:upSince", namespaces=NS) is None
    notes = [n.text or "" for n in root.findall("v:note", NS)]
    assert len(notes) == 1 and "scheduler" in notes[0]
    assert (minimal.status_code, minimal.content) == (503, b"")


async def test_without_a_health_check_the_broker_is_not_available(tmp_path: Path) -> None:
    async with in_process(tmp_path, None) as client:
        answer = await client.get("/availability")
    root = ET.fromstring(answer.content)
    assert root.findtext("v:available", namespaces=NS) == "false"
    assert "no connection" in (root.findtext("v:note", namespaces=NS) or "")


async def test_the_probe_asks_each_service_once_per_period() -> None:
    services, clock = FakeServices(), Clock()
    moments = iter(datetime(2026, 12, 2, h, tzinfo=UTC) for h in range(10, 20))
    probe = AvailabilityProbe(services, clock=clock, now=lambda: next(moments), cache_s=1.5)
    started = datetime(2026, 12, 2, 10, tzinfo=UTC)
    reports = await asyncio.gather(*(probe.report() for _ in range(50)))
    assert {r.available for r in reports} == {True}
    assert sorted(services.asked) == sorted(SERVICES)  # 50 concurrent callers, one round
    assert reports[0].up_since == started  # up since the probe (the HTTP API) started

    services.down = {"launcher-error"}
    clock.t += 1.0
    assert (await probe.report()).available  # still the cached answer
    clock.t += 1.0
    down = await probe.report()
    assert not down.available and down.up_since is None
    assert len(down.notes) == 1 and "launcher" in down.notes[0]
    assert len(services.asked) == 2 * len(SERVICES)

    services.down = set()
    clock.t += 2.0
    back = await probe.report()
    assert back.available and back.up_since == datetime(2026, 12, 2, 11, tzinfo=UTC)  # since it came back


async def test_the_vosi_endpoints_pass_the_same_guard(tmp_path: Path) -> None:
    """Public, but behind the same guard as every route: a write from another origin is refused
    before any route, and a method they do not have is an error in the API's own format."""
    async with in_process(tmp_path, FakeServices()) as client:
        cross = await client.post(
            "/availability",
            content=b"{}",
            headers={"Origin": "https://evil.example", "Content-Type": "application/json"},
        )
        wrong = await client.post("/capabilities", json={}, headers={"Accept": "application/json"})
    assert cross.status_code == 403 and b"urn:cross-origin" in cross.content
    assert wrong.status_code == 405 and "messages" in wrong.json()
