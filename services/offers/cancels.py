"""The answer to a cancel that waited for the session's end (pure: no I/O, ``now`` is an argument).

A cancel of an accepted session is decided by the offers service (it is legal, and forwarded), but
carried out by the services that hold the session: the launcher stops what runs and publishes
CANCELLED. The requester is answered when the session has ended, so that the answer shows the
phase it ended in. A session can end otherwise before the cancel reaches it (it completed, or
failed): then the cancel was not applied, and the answer says how the session ended.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shared.lifecycle import Phase, is_terminal
from shared.messages import UpdateResult
from shared.models import MessageItem

#: The kind of the message of a cancel that came too late (HTTP: 409).
ENDED_FIRST = "urn:session-ended"


def waits_for_end(applied: bool, forwarded: bool, phase: Phase | None) -> bool:
    """Whether an update's answer waits for the session's end: a cancel forwarded to the services
    that hold the session while it has not ended yet (an offer's cancel is final at once)."""
    return applied and forwarded and phase is not None and not is_terminal(phase)


def cancel_outcome(
    session_id: str, update_id: str, ended: Phase, messages: Sequence[MessageItem], now: datetime
) -> UpdateResult:
    """The answer to a waiting cancel once the session has ended in `ended` (a terminal phase),
    with the messages the end was reported with."""
    if ended is Phase.CANCELLED:
        return UpdateResult(
            session_id=session_id, update_id=update_id, applied=True, phase=ended.value, messages=[*messages]
        )
    late = MessageItem.error(
        ENDED_FIRST,
        "Session ${session} ended ${phase} before the cancellation took effect; legal updates now: none",
        time=now,
        session=session_id,
        phase=ended.value,
    )
    return UpdateResult(
        session_id=session_id,
        update_id=update_id,
        applied=False,
        phase=ended.value,
        messages=[*messages, late],
    )
