"""One request is one trace: spans from offers, scheduler and launcher share a trace id, and the
session's events carry it."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from shared.client import BrokerClient
from shared.ops.embedded import EmbeddedBroker
from tests.e2e.helpers import hello_request

SERVICES = {"offers", "scheduler", "launcher"}


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver: keeps (trace id, service.name, span name) of every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def add(self, request: ExportTraceServiceRequest) -> None:
        found: list[tuple[str, str, str]] = []
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = attributes.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                found += [(span.trace_id.hex(), service, span.name) for span in scope_spans.spans]
        with self.lock:
            self.spans += found

    def services_by_trace(self) -> dict[str, set[str]]:
        by_trace: dict[str, set[str]] = defaultdict(set)
        with self.lock:
            for trace_id, service, _ in self.spans:
                by_trace[trace_id].add(service)
        return by_trace


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def traced_broker(receiver: OtlpReceiver, broker_factory: Callable[..., EmbeddedBroker]) -> EmbeddedBroker:
    # `receiver` first, so it is torn down last: the services flush their spans to it as they stop.
    return broker_factory(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="200",
    )


async def test_one_request_is_one_trace_across_the_three_services(
    traced_broker: EmbeddedBroker, receiver: OtlpReceiver
) -> None:
    async with BrokerClient(traced_broker.url, traced_broker.login("alice")) as client:
        offerset = await client.submit(hello_request())
        assert offerset.result == "YES"
        assert offerset.offers and offerset.offers[0].meta
        session_id = offerset.offers[0].meta.uuid
        assert session_id is not None
        assert (await client.accept(session_id)).applied
        events = await client.wait_until_done(session_id, timeout=60)
    assert events[-1].phase == "COMPLETED", [e.phase for e in events]

    # The services export in batches every 200 ms: wait until one trace holds all three of them.
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        complete = {t for t, services in receiver.services_by_trace().items() if services >= SERVICES}
        if complete or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.25)
    assert complete, f"no trace spans all three services: {dict(receiver.services_by_trace())}"

    # Every event of the session names the same trace, and it is that one.
    event_traces = {event.trace_id for event in events}
    assert len(event_traces) == 1, {e.phase: e.trace_id for e in events}
    (trace_id,) = event_traces
    assert trace_id in complete
