"""The transport floor: a plain nats-py JetStream chain shaped like the broker's request path.

Four JetStream publishes awaiting PubAcks and three durable pull deliveries with double acks, ~1 KiB
JSON, the relays as separate processes — the same hops as client → offers → scheduler → offers →
client, with no broker logic. ``broker bench --baseline`` measures it in the same run, so the
broker's figure can be stated as a ratio of what the transport allows on this machine.

The relays come in two implementations over the same stream, consumers and driver (issue 11: does
faststream earn its place?): plain nats-py here (the default), and a faststream application with a
batch pull subscriber and a declared publisher in ``shared.ops.bench_floor_faststream``, chosen with
``broker bench --baseline --floor-transport faststream`` (or ``faststream-patched``). faststream
comes with the ``bench`` extra and is imported only by a relay process that runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

STREAM = "FLOOR"
HOPS = 3  # relays; plus the client's first publish that makes four publishes
# Each relay fetches up to this many messages at once, whichever implementation it is.
RELAY_BATCH = 64
FASTSTREAM_MISSING = "--floor-transport {} needs faststream, from the bench extra"


class FloorTransport(StrEnum):
    """The implementation of the floor's relays."""

    NATS_PY = "nats-py"
    FASTSTREAM = "faststream"
    # The same app with one fix to faststream 0.7.8's batch loop (see shared.ops.bench_floor_faststream).
    FASTSTREAM_PATCHED = "faststream-patched"

    @property
    def needs_faststream(self) -> bool:
        return self is not FloorTransport.NATS_PY


def faststream_installed() -> bool:
    return importlib.util.find_spec("faststream") is not None


def stage_subject(stage: int, request_id: str = "*") -> str:
    return f"floor.s{stage}.{request_id}"


def durable(stage: int) -> str:
    return f"floor-{stage}"


def consumer_config(stage: int) -> ConsumerConfig:
    """The durable of one stage, declared once by the driver (a relay of either kind binds to it)."""
    return ConsumerConfig(
        durable_name=durable(stage),
        filter_subject=stage_subject(stage),
        ack_policy=AckPolicy.EXPLICIT,
        max_ack_pending=1000,
    )


async def declare(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(STREAM)
        await js.add_stream(StreamConfig(name=STREAM, subjects=["floor.>"], storage=StorageType.FILE))
        for stage in range(HOPS):
            await js.add_consumer(STREAM, consumer_config(stage))
    finally:
        await nc.close()


async def wait_ready(url: str, relays: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """Until every stage's durable has a pull request waiting, so that no relay's start-up (a
    faststream relay imports for a second or more) is counted in the measured time."""
    nc = await nats.connect(url)
    try:
        jsm = nc.jetstream()
        deadline = time.monotonic() + timeout
        pending = set(range(HOPS))
        while pending:
            for stage, proc in enumerate(relays):
                if proc.poll() is not None:
                    raise RuntimeError(f"floor relay {stage} exited with status {proc.returncode}")
            for stage in sorted(pending):
                if (await jsm.consumer_info(STREAM, durable(stage))).num_waiting:
                    pending.discard(stage)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"floor relays {sorted(pending)} not pulling after {timeout:.0f} s")
            await asyncio.sleep(0.02)
    finally:
        await nc.close()


async def relay(url: str, stage: int, batch: int = RELAY_BATCH) -> None:
    """Consume stage N, publish stage N+1 with a dedup id, double-ack: what a service does minus logic."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(stage_subject(stage), durable=durable(stage), stream=STREAM)
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


def start_relays(
    url: str, transport: FloorTransport = FloorTransport.NATS_PY
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen([sys.executable, "-m", "shared.ops.bench_floor", url, str(stage), transport.value])
        for stage in range(HOPS)
    ]


def main(argv: Sequence[str]) -> None:
    """``python -m shared.ops.bench_floor URL STAGE [TRANSPORT]``: one relay, until terminated."""
    url, stage = argv[0], int(argv[1])
    transport = FloorTransport(argv[2]) if len(argv) > 2 else FloorTransport.NATS_PY
    if transport.needs_faststream:
        from shared.ops.bench_floor_faststream import run_relay

        run_relay(url, stage, patched=transport is FloorTransport.FASTSTREAM_PATCHED)
    else:
        asyncio.run(relay(url, stage))


if __name__ == "__main__":
    main(sys.argv[1:])
