"""Publishing through a leader election on a real 3-node JetStream cluster (`shared.bus.publishing`):
the stream leader's node is SIGKILLed in the middle of a run of publishes, every publish is retried
with its own ``Nats-Msg-Id`` until the new leader stores it, and each message is stored once. And
the cluster's routes require their password."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from pydantic import SecretStr
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks

from shared.bus.publishing import TRANSIENT, publish_once
from shared.ops.cluster import ROUTE_USER, Node, node_config
from shared.ops.embedded import NatsServer, free_port
from shared.ops.secured import write_secret

STREAM = "T"
PUBLISHERS, EACH = 3, 60


@dataclass
class Cluster:
    nodes: list[Node]
    servers: list[NatsServer]
    user: str
    password: str

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{node.client_port}" for node in self.nodes]

    async def connect(self) -> Client:
        async def unreported(_: Exception) -> None:
            return None

        return await nats.connect(
            self.urls,
            user=self.user,
            password=self.password,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            error_cb=unreported,
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes with one client user and authenticated routes, as `shared.ops.cluster` writes them."""
    password = secrets.token_urlsafe(16)
    base: dict[str, Any] = {"authorization": {"user": "test", "password": password}}
    nodes = [Node(f"n{i + 1}", free_port(), free_port()) for i in range(3)]
    route_secret = SecretStr(secrets.token_urlsafe(16))
    servers = []
    for node in nodes:
        config = tmp_path / f"{node.name}.json"
        write_secret(config, json.dumps(node_config(base, node, nodes, route_secret)).encode())
        server = NatsServer(
            tmp_path / f"store-{node.name}",
            port=node.client_port,
            config_file=config,
            log_file=tmp_path / f"{node.name}.log",
        )
        servers.append(server)
    try:
        for server in servers:
            server.start()
        yield Cluster(nodes, servers, "test", password)
    finally:
        for server in servers:
            server.stop()


async def _ready_stream(nc: Client) -> None:
    """The R3 stream, once the cluster has elected its meta leader."""
    js = nc.jetstream()
    for _ in range(100):
        try:
            await js.add_stream(
                StreamConfig(name=STREAM, subjects=["t.>"], num_replicas=3, duplicate_window=60)
            )
            return
        except Exception:
            await asyncio.sleep(0.2)
    raise AssertionError("the cluster never accepted the stream")


@pytest.fixture
def retries() -> Iterator[list[RetryDetails]]:
    """Every retry stamina schedules, seen through its own instrumentation."""
    seen: list[RetryDetails] = []
    before = get_on_retry_hooks()
    set_on_retry_hooks([seen.append])
    yield seen
    set_on_retry_hooks(before)


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    nc = await cluster.connect()
    await _ready_stream(nc)
    yield nc
    await nc.close()


async def test_publishes_through_a_leader_kill_are_stored_exactly_once(
    cluster: Cluster, client: Client, retries: list[RetryDetails]
) -> None:
    js = client.jetstream()
    published = asyncio.Event()
    count = 0
    longest = 0.0

    async def publisher(who: int) -> None:
        nonlocal count, longest
        for n in range(EACH):
            began = time.monotonic()
            ack = await publish_once(
                js, f"t.{who}", f"{who}-{n}".encode(), f"{who}-{n}", attempt_timeout_s=1.0, deadline_s=60.0
            )
            assert ack.stream == STREAM
            longest = max(longest, time.monotonic() - began)
            count += 1
            if count == PUBLISHERS * EACH // 3:
                published.set()
            await asyncio.sleep(0.02)

    async def kill_the_leader() -> str:
        await published.wait()
        info = await js.stream_info(STREAM)
        assert info.cluster is not None and info.cluster.leader is not None
        leader = info.cluster.leader
        cluster.servers[[node.name for node in cluster.nodes].index(leader)].stop(signal.SIGKILL)
        return leader

    killed, *_ = await asyncio.gather(kill_the_leader(), *(publisher(who) for who in range(PUBLISHERS)))

    # Every message once: as many as were published, each id once (the stream's duplicate window
    # dropped any copy the old leader had stored before it died).
    info = await js.stream_info(STREAM)
    assert info.cluster is not None and info.cluster.leader not in (None, killed)
    assert info.state.messages == PUBLISHERS * EACH
    sub = await js.subscribe("t.>", stream=STREAM, ordered_consumer=True)
    ids = []
    for _ in range(PUBLISHERS * EACH):
        msg = await sub.next_msg(timeout=5)
        ids.append((msg.headers or {}).get("Nats-Msg-Id"))
    assert sorted(ids) == sorted(f"{who}-{n}" for who in range(PUBLISHERS) for n in range(EACH))
    # The election was met and ridden out by retries, each of a transient failure.
    print(f"longest publish {longest:.2f} s, {len(retries)} retries")
    assert retries, "no publish met the election"
    assert all(isinstance(retry.caused_by, TRANSIENT) for retry in retries)


def test_a_route_without_the_cluster_password_is_refused(cluster: Cluster) -> None:
    """A would-be node that does not know the routes' secret is turned away."""
    with socket.create_connection(("127.0.0.1", cluster.nodes[0].route_port), timeout=5) as route:
        reader = route.makefile("rb")
        assert reader.readline().startswith(b"INFO ")
        connect = {"user": ROUTE_USER, "pass": "wrong", "verbose": False, "pedantic": False, "name": "rogue"}
        route.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        assert b"Authorization Violation" in reader.readline()
