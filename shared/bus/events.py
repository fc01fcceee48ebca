"""Publishing a session's phase: one event per (session, phase), from whichever service owns it."""

from __future__ import annotations

from shared import subjects
from shared.bus.store import Transaction
from shared.lifecycle import Phase
from shared.messages import SessionEvent
from shared.models import MessageItem
from shared.telemetry import current_trace_id, trace_id_from_headers


async def publish_phase(
    tx: Transaction,
    session_id: str,
    owner: str,
    phase: Phase,
    trace: dict[str, str],
    messages: list[MessageItem] | None = None,
    outputs: dict[str, str] | None = None,
    connectors: list[dict[str, str]] | None = None,
) -> None:
    """Queue the event in the outbox; its id ``<session>:<PHASE>`` lets the stream drop any resend.

    ``trace`` is the session's stored trace context (the request's), so every phase joins one trace.
    """
    event = SessionEvent(
        session_id=session_id,
        phase=phase.value,
        at=tx.now,
        messages=messages or [],
        outputs=outputs or {},
        connectors=connectors or [],
        trace_id=trace_id_from_headers(trace) or current_trace_id(),
    )
    await tx.publish(
        subjects.session_event(owner, session_id, phase.value),
        event.to_bytes(),
        subjects.phase_msg_id(session_id, phase.value),
        trace_headers=trace or None,
    )
