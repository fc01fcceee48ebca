"""A create that is never made twice, in the one retry loop of its call.

A create is not idempotent: when its answer is lost (a timeout) or does not say whether it worked
(a 5xx that does not prove the server did nothing), resending it could make a second session or
job. So the attempt after such a doubt looks for what the create may have made (by a name or a
comment the client chose) instead of resending; only when nothing is found is the create sent
again. Looks and sends are attempts of the same loop, so the call keeps one attempt count and one
time budget, however they mix.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.http.client import InDoubt
from shared.http.retry import CallState, Retry, RetryPolicy, retrying

log = logging.getLogger(__name__)

T = TypeVar("T")


async def create_without_duplicates(
    policy: RetryPolicy,
    send: Callable[[CallState], Awaitable[T]],
    find: Callable[[CallState], Awaitable[T | None]],
    what: str,
    *,
    settle_s: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`send` makes one create attempt (raising `InDoubt`, `Retry` or a final error); `find` makes one
    look-up and returns what an earlier create made, or None. After a create with no answer at all,
    look-ups go on for `settle_s` (the server may still be working on it) before it is resent."""
    doubt: list[tuple[float, str]] = []  # (since when, why) while in doubt

    async def attempt(state: CallState) -> T:
        if doubt:
            since, why = doubt[0]
            found = await find(state)
            if found is not None:
                log.info("%s: an earlier try did make it (%s)", what, why)
                return found
            waited = clock() - since
            if waited < settle_s:
                raise Retry(f"{why}; nothing made yet", pause=settle_s - waited)
            doubt.clear()
            raise Retry(f"{why}; nothing was made", pause=0.0)
        try:
            return await send(state)
        except InDoubt as lost:
            doubt.append((clock() if lost.no_answer else clock() - settle_s, lost.reason))
            raise Retry(lost.reason) from None

    return await retrying(policy, attempt, what)
