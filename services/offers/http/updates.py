"""An update over HTTP: published on the bus, answered once the offers service has decided it, with
the session as it is after the decision.

The offers service writes the session's new phase in the transaction that sends its answer, so the
read model normally shows it already. It is read again briefly if not (a store whose reads trail its
writes), and otherwise the answer is the stored session in the phase the decision gave it: never
the phase from before the update.
"""

from __future__ import annotations

import asyncio
import dataclasses

from services.offers.http.access import readable_session
from services.offers.http.auth import Identity
from services.offers.http.context import HttpContext
from services.offers.http.responses import ApiError, update_error
from services.offers.store import SessionRow
from shared.client import BrokerTimeout
from shared.lifecycle import Phase, observe
from shared.messages import UpdateResult

#: How long the answer waits for the read model to show the decided phase.
READ_MODEL_WAIT_S = 2.0
_FIRST_LOOK_S = 0.01
_LAST_LOOK_S = 0.2


async def decide(ctx: HttpContext, identity: Identity, session_id: str, phase: Phase) -> SessionRow:
    """The session after the offers service applied `phase`; 504 if no decision came in time, the
    refusal (with the updates legal now) if it was refused."""
    timeout = ctx.settings.http_update_timeout_s
    try:
        result: UpdateResult = await ctx.bus.update(identity.owner, session_id, phase, timeout)
    except BrokerTimeout:
        raise ApiError(
            504,
            "urn:timeout",
            "No decision on the update of session ${session} to ${phase} within ${seconds} s: the "
            "broker's services did not answer in time. The update may still be applied: read the "
            "session again before retrying",
            session=session_id,
            phase=phase.value,
            seconds=f"{timeout:g}",
        ) from None
    if not result.applied:
        raise update_error(result)
    decided = Phase(result.phase) if result.phase is not None and result.phase in Phase.__members__ else None
    return await _settled(ctx, identity, session_id, decided)


def shows(row: SessionRow, decided: Phase) -> bool:
    """Whether the stored session is at the decided phase or past it (an accepted session may be
    WAITING already), not behind it."""
    return observe(decided, row.phase) == row.phase


async def _settled(
    ctx: HttpContext, identity: Identity, session_id: str, decided: Phase | None
) -> SessionRow:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READ_MODEL_WAIT_S
    pause = _FIRST_LOOK_S
    while True:
        row = await readable_session(ctx, session_id, identity)
        if decided is None or shows(row, decided):
            return row
        if loop.time() + pause > deadline:
            return dataclasses.replace(row, phase=decided)
        await asyncio.sleep(pause)
        pause = min(pause * 2, _LAST_LOOK_S)
