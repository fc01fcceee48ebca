"""Even the bare nats-server of the runtime tests and of the benchmark's transport floor requires a
login: nothing listens unauthenticated, tests included."""

from __future__ import annotations

import nats
import pytest

from shared.ops.embedded import NatsServer


async def test_a_bare_server_refuses_a_client_without_its_password(nats_server: NatsServer) -> None:
    anonymous = nats_server.url.replace(nats_server.url.split("@")[0] + "@", "nats://")
    assert anonymous == f"nats://127.0.0.1:{nats_server.port}"
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(anonymous, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
    nc = await nats.connect(nats_server.url, allow_reconnect=False)
    try:
        assert nc.is_connected
    finally:
        await nc.close()
