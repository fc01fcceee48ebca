"""Publishing a session's phase: one event per (session, phase), from the one service that owns it.

Every phase published goes through the lifecycle's `transition` here, so no service can publish a
phase its own record of the session does not allow (docs/architecture.md names the owners).
"""

from __future__ import annotations

from shared import subjects
from shared.bus.store import Transaction
from shared.lifecycle import Phase, transition
from shared.messages import SessionEvent
from shared.models import MessageItem
from shared.telemetry import current_trace_id, trace_id_from_headers


async def publish_phase(
    tx: Transaction,
    session_id: str,
    owner: str,
    current: Phase,
    new: Phase,
    trace: dict[str, str],
    messages: list[MessageItem] | None = None,
    outputs: dict[str, str] | None = None,
    connectors: list[dict[str, str]] | None = None,
) -> bool:
    """Queue the event of ``current`` → ``new`` in the outbox; False (nothing queued) for a repeat.

    ``current`` is the phase the caller's own table holds for the session; an illegal change raises
    `IllegalTransition` before anything is queued. The event's id ``<session>:<PHASE>`` lets the
    stream drop any resend. ``trace`` is the session's stored trace context (the request's), so
    every phase joins one trace.
    """
    if not transition(current, new):
        return False
    event = SessionEvent(
        session_id=session_id,
        phase=new.value,
        at=tx.now,
        messages=messages or [],
        outputs=outputs or {},
        connectors=connectors or [],
        trace_id=trace_id_from_headers(trace) or current_trace_id(),
    )
    await tx.publish(
        subjects.session_event(owner, session_id, new.value),
        event.to_bytes(),
        subjects.phase_msg_id(session_id, new.value),
        trace_headers=trace or None,
    )
    return True
