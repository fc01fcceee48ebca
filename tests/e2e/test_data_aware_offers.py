"""Data-aware offers through the bus (execution-broker.md §4.7 C): the more remote the data, the later
the offered start; measured preparations shift later offers; Rucio look-ups and their failures.

A pool is offered only for data its platform stages: the SKAO and Rucio requests go to a pool on the
jbo platform (the local one stages simple data only), whose sessions are never accepted here."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shared import iso8601, subjects
from shared.client import BrokerClient
from shared.messages import PreparationMeasured
from shared.models import DOCKER_CONTAINER_KIND, LOCAL_COMMAND_KIND, OfferSetResponse
from shared.ops.embedded import EmbeddedBroker
from shared.subjects import LauncherFact
from tests.conftest import local_pool_access
from tests.e2e.helpers import one_core_request
from tests.fakes.rucio import FakeRucio, RucioCatalogue
from tests.fakes.serve import serve_asgi

SKAO_KIND = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/skao-data-resource.yaml"
RUCIO_KIND = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/rucio-data-resource.yaml"
GIB = 2**30

POOLS = """
[[pools]]
name = "near"
platform = "{platform}"
site = "UKSRC-RAL"
cores = 8
memory_gib = 16
grid_s = 1
prepare_s = 2
staging_delay_s = 60
{access}{rucio}
[pools.transfer]
JPSRC_STORM = 2.0
SPSRC_STORM = 3.0
"""


@pytest.fixture
def rucio() -> Iterator[tuple[str, RucioCatalogue]]:
    catalogue = RucioCatalogue()
    catalogue.add_file("testing", "near-object", 25 * GIB, ["UKSRC-RAL"])
    catalogue.add_file("testing", "far-object", 25 * GIB, ["JPSRC_STORM"])
    url, stop = serve_asgi(FakeRucio(catalogue))
    yield url, catalogue
    stop()


def start_broker(
    factory: Callable[..., EmbeddedBroker], tmp_path: Path, rucio_url: str | None, platform: str = "jbo"
) -> EmbeddedBroker:
    tmp_path.mkdir(parents=True, exist_ok=True)
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS.format(rucio="", platform=platform, access=local_pool_access()))
    env = {"EB_POOLS": str(pools)}
    if rucio_url:
        env |= {"EB_RUCIO_URL": rucio_url, "EB_RUCIO_TOKEN": "test-token"}
    return factory(**env)


CONTAINER = {"kind": DOCKER_CONTAINER_KIND, "image": {"locations": ["registry.example/pipeline:1"]}}
COMMAND = {"kind": LOCAL_COMMAND_KIND, "command": ["true"]}


def request(data: list[dict[str, Any]], executable: dict[str, Any] = CONTAINER) -> dict[str, Any]:
    return one_core_request(executable, data=data, duration="PT10M")


def skao(name: str, size: int, replicas: list[str]) -> dict[str, Any]:
    return {
        "kind": SKAO_KIND,
        "meta": {"name": name},
        "skao": {
            "namespace": "testing",
            "objectname": name,
            "objecttype": "FILE",
            "datasize": size,
            "replicas": [{"rsename": r} for r in replicas],
        },
    }


def first_start(offerset: OfferSetResponse) -> datetime:
    assert offerset.result == "YES", offerset.meta
    offer = (offerset.offers or [])[0]
    assert offer.schedule and offer.schedule.available and offer.schedule.available.start
    return iso8601.parse_instant(offer.schedule.available.start.split("/")[0])


def preparing_seconds(offerset: OfferSetResponse) -> float:
    offer = (offerset.offers or [])[0]
    assert offer.schedule and offer.schedule.preparing and offer.schedule.preparing.duration
    return iso8601.parse_duration(offer.schedule.preparing.duration).total_seconds()


@pytest.fixture
def near(broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path) -> EmbeddedBroker:
    return start_broker(broker_factory, tmp_path, None)


@pytest.fixture
def near_local(broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path) -> EmbeddedBroker:
    return start_broker(broker_factory, tmp_path, None, platform="local")


@pytest.fixture
def with_rucio(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path, rucio: tuple[str, RucioCatalogue]
) -> EmbeddedBroker:
    return start_broker(broker_factory, tmp_path / "with", rucio[0])


@pytest.fixture
def dead_rucio(broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path) -> EmbeddedBroker:
    return start_broker(broker_factory, tmp_path / "dead", "http://127.0.0.1:9")


async def test_remote_data_gives_a_later_start_and_measurements_shift_it(near: EmbeddedBroker) -> None:
    broker = near
    # The operator's key, acting for alice: it may also publish the launcher's measurements.
    async with BrokerClient(broker.url, broker.operator("alice")) as client:
        near = await client.submit(request([skao("big-near", 25 * GIB, ["UKSRC-RAL"])]))
        far = await client.submit(request([skao("small-far", 25 * GIB, ["JPSRC_STORM", "SPSRC_STORM"])]))
        # Local replica: 2 s base + 60 s staging; remote: 2 s + 2 s/GB x 25 GB + 60 s (the best replica).
        assert preparing_seconds(near) == 62
        assert preparing_seconds(far) == 112
        assert (first_start(far) - first_start(near)).total_seconds() >= 45
        # The data component carries its own preparation estimate.
        far_offer = (far.offers or [])[0]
        data_schedule = (far_offer.data or [])[0].schedule
        assert data_schedule and data_schedule.preparing and data_schedule.preparing.duration == "PT1M50S"

        # The launcher reports real preparation times; after three measured sessions from JPSRC the
        # scheduler prefers the measurement (8 s) to the table (110 s).
        for offerset in [far] + [
            await client.submit(request([skao("small-far", 25 * GIB, ["JPSRC_STORM"])])) for _ in range(2)
        ]:
            session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
            measured = PreparationMeasured(session_id=session_id, seconds=9.0, steps={"data:small-far": 8.0})
            await client.nc.jetstream().publish(
                subjects.launcher_event("near", LauncherFact.MEASURED),
                measured.to_bytes(),
                headers={"Nats-Msg-Id": f"measured:{session_id}"},
            )
        later = None
        for _ in range(50):
            later = await client.submit(request([skao("small-far", 25 * GIB, ["JPSRC_STORM"])]))
            if preparing_seconds(later) < 112:
                break
        assert later is not None and preparing_seconds(later) == 10  # 2 s base + 8 s measured


async def test_a_real_session_reports_its_measured_preparation(near_local: EmbeddedBroker) -> None:
    broker = near_local
    # The operator's key, acting for alice: it may also read the launcher's stored measurement.
    async with BrokerClient(broker.url, broker.operator("alice")) as client:
        offerset = await client.submit(request([], COMMAND))
        session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
        assert session_id is not None
        assert (await client.accept(session_id)).applied
        events = await client.wait_until_done(session_id, timeout=60)
        assert events[-1].phase == "COMPLETED"
        stored = await client.nc.jetstream().get_last_msg(
            subjects.EVENTS_STREAM, subjects.launcher_event("near", LauncherFact.MEASURED)
        )
        report = PreparationMeasured.model_validate_json(stored.data or b"{}")
        assert report.session_id == session_id and report.seconds >= 0 and "executable" in report.steps


async def test_rucio_replicas_are_looked_up_and_a_failed_look_up_is_a_specific_no(
    with_rucio: EmbeddedBroker, dead_rucio: EmbeddedBroker, rucio: tuple[str, RucioCatalogue]
) -> None:
    url, _ = rucio
    broker = with_rucio
    rucio_data = [
        {
            "kind": RUCIO_KIND,
            "meta": {"name": "far-object"},
            "rucio": {"endpoint": url, "scope": "testing", "object": "far-object", "type": "FILE"},
        }
    ]
    missing = [
        {
            "kind": RUCIO_KIND,
            "meta": {"name": "nowhere"},
            "rucio": {"endpoint": url, "scope": "testing", "object": f"no-{uuid.uuid4()}", "type": "FILE"},
        }
    ]
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        found = await client.submit(request(rucio_data))
        assert preparing_seconds(found) == 112  # replica at JPSRC_STORM, 25 GiB, from Rucio
        refused = await client.submit(request(missing))
        assert refused.result == "NO"
        texts = [m.message or "" for m in (refused.meta.messages or [])]  # type: ignore[union-attr]
        assert any("Rucio has no replica of testing:no-" in t for t in texts), texts

    # Rucio unreachable: a NO that says so, not silence.
    async with BrokerClient(dead_rucio.url, dead_rucio.login("alice")) as client:
        refused = await client.submit(request(rucio_data))
        assert refused.result == "NO"
        texts = [m.message or "" for m in (refused.meta.messages or [])]  # type: ignore[union-attr]
        assert any("Rucio did not answer the look-up of testing:far-object" in t for t in texts), texts


IVOA_KIND = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/ivoa-data-resource.yaml"
# Room for every hold of the retries below, and a grid coarse enough that two requests made in the
# same instant (give or take the bus) get the same start.
WIDE_POOLS = POOLS.replace("cores = 8", "cores = 1000").replace("grid_s = 1", "grid_s = 60")


@pytest.fixture
def wide_with_rucio(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path, rucio: tuple[str, RucioCatalogue]
) -> EmbeddedBroker:
    pools = tmp_path / "pools.toml"
    pools.write_text(WIDE_POOLS.format(rucio="", platform="jbo", access=local_pool_access()))
    return broker_factory(EB_POOLS=str(pools), EB_RUCIO_URL=rucio[0], EB_RUCIO_TOKEN="test-token")


def ivo_data(name: str, ivoid: str) -> dict[str, Any]:
    return {"kind": IVOA_KIND, "meta": {"name": name}, "ivoa": {"ivoid": ivoid}}


def rucio_data(name: str, object_name: str) -> dict[str, Any]:
    return {"kind": RUCIO_KIND, "meta": {"name": name}, "rucio": {"scope": "testing", "object": object_name}}


def on_grid(instant: datetime, seconds: float) -> float:
    """The first 60 s grid point at or after `instant` + `seconds` (as the scheduler plans)."""
    at = instant.timestamp() + seconds
    return -(-at // 60) * 60


async def test_an_ivo_data_product_starts_exactly_as_its_rucio_did(
    wide_with_rucio: EmbeddedBroker, rucio: tuple[str, RucioCatalogue]
) -> None:
    _, catalogue = rucio
    catalogue.add_file("testing", "ivo-near", 250 * GIB, ["UKSRC-RAL"])
    catalogue.add_file("testing", "ivo-far", 250 * GIB, ["JPSRC_STORM"])
    broker = wide_with_rucio
    async with BrokerClient(broker.url, broker.login("alice")) as client:
        for _ in range(5):
            before = datetime.now().astimezone()
            ivo_near, ivo_far, rucio_near, rucio_far = await asyncio.gather(
                client.submit(request([ivo_data("near", "ivo://skao.int/data?testing:ivo-near")])),
                client.submit(request([ivo_data("far", "ivo://skao.int/data?testing:ivo-far")])),
                client.submit(request([rucio_data("near", "ivo-near")])),
                client.submit(request([rucio_data("far", "ivo-far")])),
            )
            after = datetime.now().astimezone()
            # Replica at the pool's site: 2 s base + 60 s staging; at JPSRC: + 2 s/GB x 250 GB.
            assert preparing_seconds(ivo_near) == preparing_seconds(rucio_near) == 62
            assert preparing_seconds(ivo_far) == preparing_seconds(rucio_far) == 562
            # The data component carries the same estimate whichever way the DID was named.
            ivo_item = ((ivo_far.offers or [])[0].data or [])[0].schedule
            rucio_item = ((rucio_far.offers or [])[0].data or [])[0].schedule
            assert ivo_item and rucio_item and ivo_item.preparing == rucio_item.preparing
            assert first_start(ivo_far) > first_start(ivo_near)
            if all(on_grid(before, s) == on_grid(after, s) for s in (62, 562)):
                # No grid point fell between the four requests: their starts must be the same.
                assert first_start(ivo_near) == first_start(rucio_near)
                assert first_start(ivo_far) == first_start(rucio_far)
                break
        else:
            pytest.fail("every attempt straddled a grid point")

        # An identifier that names no data product, and one Rucio does not know: specific NOs.
        malformed = await client.submit(request([ivo_data("odd", "ivo://skao.int/data?testing")]))
        unknown = await client.submit(request([ivo_data("gone", "ivo://skao.int/data?testing:no-such")]))
    for refused, expected in (
        (malformed, "The data resource 'odd' names no SRCNet data product: the identifier "
                    "'ivo://skao.int/data?testing' must name the data product as <scope>:<name>"),
        (unknown, "Rucio has no replica of testing:no-such (the data product "
                  "ivo://skao.int/data?testing:no-such of gone)"),
    ):  # fmt: skip
        assert refused.result == "NO"
        texts = [m.message or "" for m in (refused.meta.messages or [])]  # type: ignore[union-attr]
        assert any(expected in text for text in texts), texts
