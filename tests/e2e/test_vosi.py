"""The broker as an IVOA service, end to end with the services as processes: the VOSI documents
validate, availability follows the services (false with a note while the scheduler is stopped, true
once it is back), and `broker registry-record` prints a record that validates."""

from __future__ import annotations

from collections.abc import Iterator
from xml.etree import ElementTree as ET

import httpx
import pytest

from shared.ivoa import documents
from tests.e2e.helpers import run_cli
from tests.e2e.http_support import HttpBroker, start_http_broker, wait_for
from tests.ivoa_schemas import validate

IVOID = "ivo://vosi.test.example.org/execution-broker"
NS = {"v": documents.VOSI_AVAILABILITY_NS}


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    running = start_http_broker(tmp_path_factory.mktemp("vosi-broker"), EB_IVOID=IVOID)
    try:
        yield running
    finally:
        running.broker.stop()


def availability(client: httpx.Client) -> ET.Element:
    answer = client.get("/availability")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    validate("availability", answer.content)
    return ET.fromstring(answer.content)


def available(root: ET.Element) -> bool:
    return root.findtext("v:available", namespaces=NS) == "true"


def until(client: httpx.Client, state: bool, timeout: float) -> ET.Element:
    """The first availability document whose ``available`` is `state`."""

    def check() -> ET.Element | None:
        root = availability(client)
        return root if available(root) is state else None

    found: ET.Element = wait_for(check, timeout)
    return found


def test_capabilities_validate(http: HttpBroker) -> None:
    with http.client(auth=None) as client:
        answer = client.get("/capabilities")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/xml")
    validate("capabilities", answer.content)
    urls = [u.text for u in ET.fromstring(answer.content).iter("accessURL")]
    assert urls == [f"{http.base_url}/capabilities", f"{http.base_url}/availability", http.base_url]


def test_availability_follows_the_services(http: HttpBroker) -> None:
    scheduler = http.broker.process("scheduler")
    with http.client(auth=None) as client:
        up = until(client, True, 10)
        assert up.findtext("v:upSince", namespaces=NS)
        assert client.get("/availability", params={"detail": "min"}).status_code == 200
        scheduler.stop()
        try:
            down = until(client, False, 10)
            notes = [n.text or "" for n in down.findall("v:note", NS)]
            assert len(notes) == 1 and "scheduler" in notes[0], notes
            assert client.get("/availability", params={"detail": "min"}).status_code == 503
        finally:
            scheduler.start()
        back = until(client, True, 60)
        assert back.findtext("v:upSince", namespaces=NS) != up.findtext("v:upSince", namespaces=NS)


def test_registry_record_validates(http: HttpBroker) -> None:
    done = run_cli(
        "registry-record",
        "--publisher",
        "SKAO <test>",
        "--contact-email",
        "ops@example.org",
        EB_IVOID=IVOID,
        EB_PUBLIC_URL=http.base_url,
    )
    assert done.returncode == 0, done.stderr
    validate("record", done.stdout)
    record = ET.fromstring(done.stdout)
    assert record.findtext("identifier") == IVOID
    assert record.findtext("curation/publisher") == "SKAO <test>"
    with http.client(auth=None) as client:
        served = ET.fromstring(client.get("/capabilities").content)
    same = [ET.tostring(c) for c in served.iter("capability")]
    assert [ET.tostring(c) for c in record.iter("capability")] == same


def test_a_wrong_ivoid_is_refused_with_a_specific_error() -> None:
    done = run_cli("registry-record", EB_IVOID="https://example.org/eb")
    assert done.returncode == 1
    assert "EB_IVOID must start with ivo://" in done.stderr
