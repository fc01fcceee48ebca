"""Publishing a session's phase: one event per (session, phase), from the one service that owns it.

Every phase published goes through the lifecycle's `transition` here, so no service can publish a
phase its own record of the session does not allow (docs/architecture.md names the owners).

One more event, not a phase change: a running session's connectors (the URL of an interactive
notebook, say) often become known only once the platform runs it, after its RUNNING event went out.
`publish_connectors` repeats the phase the session is in with them (`<session>:<PHASE>:connectors:
<digest>`), so read models, the HTTP API, the dashboard and `broker watch` show them while it runs.
"""

from __future__ import annotations

import hashlib
import json

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


async def publish_connectors(
    tx: Transaction,
    session_id: str,
    owner: str,
    phase: Phase,
    trace: dict[str, str],
    connectors: list[dict[str, str]],
) -> None:
    """Queue an event of the session's current `phase` carrying its (new) connectors, one message
    per connector so that plain-text readers see the location too. The same connectors give the
    same id, so a resumed driver that shows them again publishes nothing twice."""
    digest = hashlib.sha256(json.dumps(connectors, sort_keys=True).encode()).hexdigest()[:16]
    messages = [
        MessageItem.info(
            "urn:session-connector",
            "Connector ${kind}: ${location}",
            time=tx.now,
            kind=connector.get("kind", "connector"),
            location=connector.get("location", ""),
        )
        for connector in connectors
    ]
    event = SessionEvent(
        session_id=session_id,
        phase=phase.value,
        at=tx.now,
        messages=messages,
        connectors=connectors,
        trace_id=trace_id_from_headers(trace) or current_trace_id(),
    )
    await tx.publish(
        subjects.session_event(owner, session_id, phase.value),
        event.to_bytes(),
        f"{subjects.phase_msg_id(session_id, phase.value)}:connectors:{digest}",
        trace_headers=trace or None,
    )


#: A message's text in a stand-in event keeps at most this many characters.
STAND_IN_TEXT_CHARS = 2000
#: Outputs and connectors are kept in a stand-in event only up to this size, together.
STAND_IN_EXTRAS_BYTES = 64 * 1024


async def resend_smaller(tx: Transaction, subject: str, payload: bytes, headers: dict[str, str]) -> bool:
    """A phase event the bus refused (too large: a failure's output, say) is sent again without its
    bulk, so the phase is not lost: the messages' texts are cut short and a message says so; the
    outputs and connectors are kept only if small. Same ``<session>:<PHASE>`` id: the stream never
    stored the refused one. False if ``subject`` is not a phase event (or its body is not one)."""
    try:
        subjects.parse_session_event(subject)
        event = SessionEvent.model_validate_json(payload)
    except ValueError:
        return False
    messages = [
        m.model_copy(update={"message": (m.message or "")[:STAND_IN_TEXT_CHARS], "values": None})
        for m in event.messages[:20]
    ]
    messages.append(
        MessageItem.warn(
            "urn:event-too-large",
            "This event (${size} bytes) was too large for the bus: its messages are cut short",
            time=tx.now,
            size=len(payload),
        )
    )
    small = len(json.dumps([event.outputs, event.connectors])) <= STAND_IN_EXTRAS_BYTES
    smaller = event.model_copy(
        update={
            "messages": messages,
            "outputs": event.outputs if small else {},
            "connectors": event.connectors if small else [],
        }
    )
    await tx.publish(
        subject,
        smaller.to_bytes(),
        subjects.phase_msg_id(event.session_id, event.phase),
        trace_headers=headers,
    )
    return True
