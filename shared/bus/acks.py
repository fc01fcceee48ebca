"""Double acks for a whole batch through one reply subscription.

A double ack is an ack sent as a request: the server's empty reply confirms it was recorded, so a lost
ack cannot go unnoticed. nats-py's ``Msg.ack_sync`` makes each one a separate request with its own
timer; for a batch of a hundred that bookkeeping cost more than the acks themselves. Here each ack
carries its own reply subject under one inbox, one subscription resolves them, and a batch waits for
all of them once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

ACK = b"+ACK"
NO_RESPONDERS = "503"


class DoubleAcks:
    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._confirmed)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()

    async def _confirmed(self, reply: Msg) -> None:
        future = self._waiting.pop(reply.subject.rsplit(".", 1)[-1], None)
        if future is not None and not future.done():
            # "503 no responders": nobody took the ack (its consumer is gone), so it confirms nothing.
            future.set_result(not (reply.headers and reply.headers.get("Status") == NO_RESPONDERS))

    async def ack(self, msgs: Sequence[Msg], timeout: float) -> int:
        """Ack every message and wait up to ``timeout`` for the server to confirm; how many it did
        not confirm (each of those is redelivered after ack_wait, and the inbox skips it)."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        tokens: list[str] = []
        for msg in msgs:
            token = str(next(self._tokens))
            future: asyncio.Future[bool] = loop.create_future()
            self._waiting[token] = future
            futures.append(future)
            tokens.append(token)
            await self._nc.publish(msg.reply, ACK, reply=f"{self._prefix}.{token}")
        if not futures:
            return 0
        _, pending = await asyncio.wait(futures, timeout=timeout)
        for token, future in zip(tokens, futures, strict=True):
            if future in pending:
                self._waiting.pop(token, None)
                future.cancel()
        return sum(1 for future in futures if future in pending or not future.result())
