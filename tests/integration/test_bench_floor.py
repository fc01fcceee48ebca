"""The transport floor of `broker bench --baseline`, with each relay implementation that works as
released plus the patched faststream one: every request goes round the three relays and back.

Small on purpose: this checks the chain, it measures nothing. faststream as released is left out:
it stalls batches for the consumer's ack_wait (shared/ops/bench_floor_faststream.py says why)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.bench import measure_floor
from shared.ops.bench_floor import HOPS, FloorTransport


@pytest.mark.parametrize("transport", [FloorTransport.NATS_PY, FloorTransport.FASTSTREAM_PATCHED])
async def test_every_request_comes_back_through_the_relays(tmp_path: Path, transport: FloorTransport) -> None:
    floor = await measure_floor(tmp_path, requests=20, concurrency=5, transport=transport)
    assert floor["transport"] == transport.value
    assert floor["lost"] == 0
    assert floor["per_s"] > 0
    # Below the consumers' ack_wait (30 s): no fetched message was dropped and redelivered.
    assert 0 < floor["latency_ms"]["max"] < 30_000
    assert {f"relay-{stage}" for stage in range(HOPS)} <= set(floor["cpu_ms_per_request"])
