"""RucioClient against the fake Rucio over real HTTP on 127.0.0.1 (launcher-targets.md §4.1, §4.6)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from services.scheduler.estimates import (
    GIB,
    LearnedEstimates,
    TransferTable,
    data_needs,
    estimate_preparation,
)
from services.scheduler.rucio import (
    ReplicaInfo,
    RucioClient,
    RucioLookupFailed,
    parse_replicas,
    resolve_needs,
)
from shared.models.kinds import RUCIO_DATA_KIND
from tests.fakes.rucio import FakeRucio, RucioCatalogue
from tests.fakes.serve import serve_asgi

TOKEN = "test-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeRucio:
    catalogue = RucioCatalogue(tokens={TOKEN})
    catalogue.add_file("testing", "big.ms", 25 * GIB, ["JPSRC_STORM", "SPSRC_STORM"])
    catalogue.add_file("testing", "copying.fits", 7, ["AUSRC_STORM", "JPSRC_STORM"],
                       states={"AUSRC_STORM": "COPYING"})
    catalogue.add_file("testing", "orphan.fits", 11, [])
    catalogue.add_file("testing", "part-1", 10, ["AUSRC_STORM", "JPSRC_STORM"])
    catalogue.add_file("testing", "part-2", 20, ["JPSRC_STORM"])
    catalogue.add_dataset("testing", "obs-42", [("testing", "part-1"), ("testing", "part-2")])
    return FakeRucio(catalogue)


@pytest.fixture
def base_url(fake: FakeRucio) -> Iterator[str]:
    url, stop = serve_asgi(fake, graceful_s=1.0)
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def rucio(base_url: str, clock: Clock) -> AsyncIterator[RucioClient]:
    async with RucioClient(base_url, TOKEN, timeout=2.0, backoff_s=0.01, max_backoff_s=0.05,
                           clock=clock) as client:
        yield client


async def control(method: str, url: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient() as http:
        response = await http.request(method, url, **kwargs)
        response.raise_for_status()
        return response


async def add_fault(base_url: str, spec: dict[str, Any]) -> None:
    await control("POST", f"{base_url}/_fake/faults", json=spec)


async def api_requests(base_url: str) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = (await control("GET", f"{base_url}/_fake/requests")).json()
    return recorded


async def test_replicas_are_parsed_from_ndjson(rucio: RucioClient, base_url: str) -> None:
    info = await rucio.replicas("testing", "big.ms")
    assert info == ReplicaInfo(bytes=25 * GIB, rses=("JPSRC_STORM", "SPSRC_STORM"), files=1, complete=True)
    [request] = await api_requests(base_url)
    assert request["path"] == "/replicas/testing/big.ms"
    assert request["headers"]["x-rucio-auth-token"] == "<redacted>"
    assert request["headers"]["accept"] == "application/x-json-stream"
    assert request["status"] == 200


async def test_only_available_replicas_count(rucio: RucioClient) -> None:
    assert (await rucio.replicas("testing", "copying.fits")).rses == ("JPSRC_STORM",)
    assert (await rucio.replicas("testing", "orphan.fits")).rses == ()


async def test_a_dataset_is_where_all_its_files_are(rucio: RucioClient) -> None:
    info = await rucio.replicas("testing", "obs-42")
    assert info == ReplicaInfo(bytes=30, rses=("JPSRC_STORM",), files=2, complete=True)


async def test_the_fake_lists_states_when_asked(base_url: str) -> None:
    response = await control("GET", f"{base_url}/replicas/testing/copying.fits",
                             params={"all_states": "true"}, headers={"X-Rucio-Auth-Token": TOKEN})
    assert response.headers["content-type"].startswith("application/x-json-stream")
    assert parse_replicas("testing:copying.fits", response.text).rses == ("JPSRC_STORM",)
    assert '"states"' in response.text


async def test_auth_failure_is_specific_and_not_retried(base_url: str) -> None:
    async with RucioClient(base_url, "wrong-token", backoff_s=0.01) as client:
        with pytest.raises(RucioLookupFailed) as caught:
            await client.replicas("testing", "big.ms")
    assert caught.value.status == 401
    assert caught.value.message == (
        "Rucio refused the look-up of testing:big.ms: Cannot authenticate with given credentials (HTTP 401)"
    )
    assert len(await api_requests(base_url)) == 1
    async with RucioClient(base_url, None) as anonymous:
        with pytest.raises(RucioLookupFailed, match="refused"):
            await anonymous.replicas("testing", "big.ms")


async def test_unknown_did_is_404(rucio: RucioClient, base_url: str) -> None:
    with pytest.raises(RucioLookupFailed) as caught:
        await rucio.replicas("testing", "nothing-here")
    assert caught.value.message == "Rucio has no replica of testing:nothing-here"
    assert len(await api_requests(base_url)) == 1


async def test_500_then_success_is_retried(rucio: RucioClient, base_url: str) -> None:
    await add_fault(base_url, {"match": {"method": "GET", "path": "/replicas/*"}, "status": 500, "times": 2})
    info = await rucio.replicas("testing", "big.ms")
    assert info.rses == ("JPSRC_STORM", "SPSRC_STORM")
    assert [r["status"] for r in await api_requests(base_url)] == [500, 500, 200]


async def test_persistent_503_gives_up_after_the_bounded_retries(rucio: RucioClient, base_url: str) -> None:
    await add_fault(base_url, {"match": {"path": "/replicas/*"}, "status": 503, "times": None,
                         "headers": {"Retry-After": "0"},
                         "body": '{"ExceptionClass": "DatabaseException", "ExceptionMessage": "db down"}'})
    with pytest.raises(RucioLookupFailed) as caught:
        await rucio.replicas("testing", "big.ms")
    assert caught.value.message == (
        "Rucio did not answer the look-up of testing:big.ms after 3 attempts: db down (HTTP 503)"
    )
    assert len(await api_requests(base_url)) == 3


async def test_timeout_becomes_a_failure_with_a_message(base_url: str) -> None:
    await add_fault(base_url, {"match": {"path": "/replicas/*"}, "delay_s": 1.5, "times": 2})
    async with RucioClient(base_url, TOKEN, timeout=0.3, attempts=2, backoff_s=0.01) as client:
        with pytest.raises(RucioLookupFailed) as caught:
            await client.replicas("testing", "big.ms")
    assert caught.value.message == (
        "Rucio did not answer the look-up of testing:big.ms after 2 attempts: no answer within 0.3 s"
    )


async def test_unreachable_server() -> None:
    async with RucioClient("http://127.0.0.1:9", TOKEN, timeout=1.0, attempts=2, backoff_s=0.01) as client:
        with pytest.raises(RucioLookupFailed, match=r"after 2 attempts: cannot reach http://127\.0\.0\.1:9"):
            await client.replicas("testing", "big.ms")


async def test_malformed_ndjson(rucio: RucioClient, base_url: str) -> None:
    bad = '{"rses": {}}\nnot json\n'
    await add_fault(base_url, {"match": {"path": "/replicas/*"}, "status": 200, "body": bad})
    with pytest.raises(RucioLookupFailed) as caught:
        await rucio.replicas("testing", "big.ms")
    assert caught.value.message == "Rucio sent a malformed answer for testing:big.ms: line 2 is not JSON"
    assert len(await api_requests(base_url)) == 1


async def test_cache_hit_avoids_a_second_request_until_it_expires(
    rucio: RucioClient, base_url: str, clock: Clock
) -> None:
    first = await rucio.replicas("testing", "big.ms")
    clock.now += 299
    assert await rucio.replicas("testing", "big.ms") == first
    assert len(await api_requests(base_url)) == 1
    clock.now += 2
    await rucio.replicas("testing", "big.ms")
    assert len(await api_requests(base_url)) == 2


async def test_failures_are_not_cached(rucio: RucioClient, base_url: str) -> None:
    await add_fault(base_url, {"match": {"path": "/replicas/*"}, "status": 403, "times": 1})
    with pytest.raises(RucioLookupFailed, match="refused"):
        await rucio.replicas("testing", "big.ms")
    assert (await rucio.replicas("testing", "big.ms")).rses


async def test_each_request_is_a_client_span(base_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    await add_fault(base_url, {"match": {"path": "/replicas/*"}, "status": 502, "times": 1})
    async with RucioClient(base_url, TOKEN, backoff_s=0.01, tracer_provider=provider) as client:
        await client.replicas("testing", "big.ms")
        await client.replicas("testing", "big.ms")  # cached: no request, no span
    spans = exporter.get_finished_spans()
    assert [s.kind for s in spans] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert [s.attributes["http.response.status_code"] for s in spans if s.attributes] == [502, 200]
    assert spans[0].status.status_code is StatusCode.ERROR
    assert spans[1].attributes is not None and spans[1].attributes["rucio.did"] == "testing:big.ms"
    assert spans[1].attributes["http.request.resend_count"] == 1


async def test_a_vanished_replica_is_seen_after_the_cache_expires(
    rucio: RucioClient, fake: FakeRucio, base_url: str, clock: Clock
) -> None:
    assert (await rucio.replicas("testing", "big.ms")).rses == ("JPSRC_STORM", "SPSRC_STORM")
    await control("DELETE", f"{base_url}/_fake/replicas/JPSRC_STORM/testing/big.ms")
    clock.now += 301
    assert (await rucio.replicas("testing", "big.ms")).rses == ("SPSRC_STORM",)


async def test_resolve_needs_then_estimate_end_to_end(rucio: RucioClient) -> None:
    needs = data_needs([
        {"kind": RUCIO_DATA_KIND, "meta": {"name": "ms"}, "rucio": {"scope": "testing", "object": "big.ms"}},
        {"kind": RUCIO_DATA_KIND, "meta": {"name": "lost"}, "rucio": {"scope": "testing", "object": "lost"}},
    ])
    resolved, problems = await resolve_needs(needs, rucio)
    assert problems == ["Rucio has no replica of testing:lost"]
    assert resolved[0].replicas == ("JPSRC_STORM", "SPSRC_STORM") and resolved[0].size_bytes == 25 * GIB
    table = TransferTable.from_mapping({"JPSRC_STORM": 2.0, "SPSRC_STORM": 3.0})
    result = estimate_preparation(resolved[:1], "UKSRC-RAL", "uk", table, LearnedEstimates(), 0.0)
    assert result.total_s == 110.0 and result.per_item["ms"].source == "JPSRC_STORM"
