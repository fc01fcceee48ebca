"""Pull batches from a durable consumer: whatever is waiting at once, or the first message to come.

nats-py's ``fetch(batch, timeout)`` suits a fixed-size batch, not a service: when fewer than
``batch`` messages are waiting it keeps a lingering pull open and returns only when the batch is
full or ``timeout`` has passed (measured here: p95 over a second at 50 requests in flight). This
puller speaks the JetStream pull protocol directly (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>``
with a reply inbox, nats-py's public core API) in two steps:

1. ``no_wait`` for up to ``batch``: the server sends what is waiting and ends with a "404 No
   Messages" status when that was fewer; nothing lingers.
2. Only if nothing was waiting: a lingering request for ONE message that expires after ``wait``:
   it ends when that message arrives, so it cannot capture later messages or stall the next pull.

Every message delivered to the inbox is kept until taken, so a late delivery is never lost (it is
ack-pending for this consumer and would otherwise wait out ack_wait).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# A status without a reply subject ends a request; "100" is an idle heartbeat, which we never ask for.
_STATUS = "Status"
# If a request's closing status is lost (a reconnect), give up on it after this long.
_GUARD_S = 5.0
# The status the server answers a request with when nothing serves its subject.
_NO_RESPONDERS = "503"


class JetStreamUnreachable(ConnectionError):
    """No JetStream answers the pull requests (a site's link to the hub is cut, a cluster has no
    leader): the caller waits before asking again instead of asking in a tight loop."""


class BatchPuller:
    def __init__(
        self, nc: Client, stream: str, durable: str, batch: int, api_prefix: str = "$JS.API"
    ) -> None:
        self._nc = nc
        self._next = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._batch = batch
        self._inbox = nc.new_inbox()
        self._delivered: deque[Msg] = deque()
        self._statuses = 0
        self._last_status: str | None = None
        self._arrived = asyncio.Event()
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._receive)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _receive(self, msg: Msg) -> None:
        if msg.headers and _STATUS in msg.headers and not msg.reply:
            self._statuses += 1
            self._last_status = msg.headers[_STATUS]
        else:
            self._delivered.append(msg)
        self._arrived.set()

    async def next_batch(self, wait: float) -> list[Msg]:
        """Up to ``batch`` messages in stream order; [] if none came within ``wait`` seconds."""
        if not self._delivered:
            self._last_status = None
            await self._request({"batch": self._batch, "no_wait": True}, until_one=False)
            if self._last_status == _NO_RESPONDERS:
                raise JetStreamUnreachable(f"no responders for {self._next}")
        if not self._delivered:
            expires = int(wait * 1_000_000_000)
            await self._request({"batch": 1, "expires": expires}, until_one=True, guard=wait + _GUARD_S)
        taken: list[Msg] = []
        while self._delivered and len(taken) < self._batch:
            taken.append(self._delivered.popleft())
        return taken

    async def _request(self, body: dict[str, object], *, until_one: bool, guard: float = _GUARD_S) -> None:
        """Ask, then wait until the request is over: a status ends it, so does a full batch (or, for
        the lingering request, its one message)."""
        wanted = int(str(body["batch"]))
        statuses, before = self._statuses, len(self._delivered)
        await self._nc.publish(self._next, json.dumps(body).encode(), reply=self._inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + guard
        while self._statuses == statuses and len(self._delivered) - before < wanted:
            if until_one and len(self._delivered) > before:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return
