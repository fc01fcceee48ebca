"""The transport floor: a plain nats-py JetStream chain shaped like the broker's request path.

Four JetStream publishes awaiting PubAcks and three durable pull deliveries with double acks, ~1 KiB
JSON, the relays as separate processes — the same hops as client → offers → scheduler → offers →
client, with no broker logic. ``broker bench --baseline`` measures it in the same run, so the
broker's figure can be stated as a ratio of what the transport allows on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

STREAM = "FLOOR"
HOPS = 3  # relays; plus the client's first publish that makes four publishes


def stage_subject(stage: int, request_id: str = "*") -> str:
    return f"floor.s{stage}.{request_id}"


async def declare(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(STREAM)
        await js.add_stream(StreamConfig(name=STREAM, subjects=["floor.>"], storage=StorageType.FILE))
        for stage in range(HOPS):
            await js.add_consumer(
                STREAM,
                ConsumerConfig(
                    durable_name=f"floor-{stage}",
                    filter_subject=stage_subject(stage),
                    ack_policy=AckPolicy.EXPLICIT,
                    max_ack_pending=1000,
                ),
            )
    finally:
        await nc.close()


async def relay(url: str, stage: int, batch: int = 64) -> None:
    """Consume stage N, publish stage N+1 with a dedup id, double-ack: what a service does minus logic."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(stage_subject(stage), durable=f"floor-{stage}", stream=STREAM)
    while True:
        try:
            msgs = await sub.fetch(batch, timeout=1)
        except TimeoutError:  # nats-py raises its own subclass or, with no message at all, asyncio's
            continue

        async def forward(msg: Msg) -> None:
            request_id = msg.subject.rsplit(".", 1)[-1]
            body = json.loads(msg.data)
            body["hops"] = body.get("hops", 0) + 1
            # The same timeouts as the broker's runtime: nats-py's 1 s default for ack_sync expires
            # on a saturated machine, and the message then waits out ack_wait (30 s) to come back.
            try:
                await js.publish(
                    stage_subject(stage + 1, request_id),
                    json.dumps(body).encode(),
                    headers={"Nats-Msg-Id": f"{stage + 1}:{request_id}"},
                    timeout=5.0,
                )
            except Exception:  # a PubAck lost under load: redeliver soon, the dedup id drops a copy
                await msg.nak(delay=0.1)
                return
            await msg.ack_sync(timeout=5.0)

        # One failure must not end the relay (that would leave every later request unanswered).
        await asyncio.gather(*(forward(m) for m in msgs), return_exceptions=True)


@dataclass
class FloorResult:
    requests: int
    concurrency: int
    per_s: float
    latencies_ms: list[float]
    lost: int = 0


async def drive(url: str, requests: int, concurrency: int) -> FloorResult:
    nc = await nats.connect(url)
    js = nc.jetstream()
    payload = {"padding": "x" * 900, "kind": "floor"}
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    lost = 0

    async def one() -> None:
        nonlocal lost
        request_id = str(uuid.uuid4())
        async with limit:
            began = time.perf_counter()
            sub = await nc.subscribe(stage_subject(HOPS, request_id), max_msgs=1)
            try:
                await js.publish(
                    stage_subject(0, request_id),
                    json.dumps(payload).encode(),
                    headers={"Nats-Msg-Id": request_id},
                    timeout=5.0,
                )
                await sub.next_msg(timeout=120)
            except nats.errors.Error:  # counted, not fatal: one stuck request must not void the run
                lost += 1
                return
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    elapsed = time.perf_counter() - began
    await nc.close()
    return FloorResult(requests, concurrency, len(latencies) / elapsed, latencies, lost)


def start_relays(url: str) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "shared.ops.bench_floor", url, str(stage)])
        for stage in range(HOPS)
    ]


def main(argv: Sequence[str]) -> None:
    asyncio.run(relay(argv[0], int(argv[1])))


if __name__ == "__main__":
    main(sys.argv[1:])
