"""One JetStream publish that rides out a leader election, resent with the same ``Nats-Msg-Id``.

When a cluster node that leads a stream dies, its peers elect another leader in a few seconds (5-6
here, `docs/reliability.md`). Meanwhile nats-py raises at once and does not retry: no responders
(``NoStreamResponseError``), a 503 (``ServiceUnavailableError``), a timeout, or a connection that is
moving to another node. Each is transient; the publish is sent again with stamina's back-off until
it is stored or ``deadline_s`` has passed. Resending is safe because the ``Nats-Msg-Id`` is the same
every time: a copy the old leader stored before it died is recognised by the stream's duplicate
window (``PubAck.duplicate``), so the message is stored exactly once.

A refusal no resend can cure (a 400, a payload over the server's limit, a malformed subject) is
raised at once.
"""

from __future__ import annotations

from collections.abc import Mapping

import nats.errors
import stamina
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

#: What a publish raises while a stream has no leader or the client moves to another node.
TRANSIENT: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    NoStreamResponseError,
    ServiceUnavailableError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
)
#: Longer than an election measured here (5-6 s), so one publish outlives one.
ELECTION_DEADLINE_S = 15.0
#: The first wait between attempts, the longest, and the random part added to each.
WAIT_INITIAL_S = 0.1
WAIT_MAX_S = 1.0
WAIT_JITTER_S = 0.2


async def publish_once(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    msg_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    stream: str | None = None,
    attempt_timeout_s: float = 2.0,
    deadline_s: float = ELECTION_DEADLINE_S,
) -> PubAck:
    """Publish until the stream confirms (a duplicate counts), retrying transient failures with the
    same ``Nats-Msg-Id`` for at most ``deadline_s``; then the last failure is raised."""
    async for attempt in stamina.retry_context(
        on=TRANSIENT,
        attempts=None,
        timeout=max(deadline_s, 0.001),
        wait_initial=WAIT_INITIAL_S,
        wait_max=WAIT_MAX_S,
        wait_jitter=WAIT_JITTER_S,
    ):
        with attempt:
            # A fresh dict each time: nats-py adds the expected-stream header to the one it is given.
            return await js.publish(
                subject,
                payload,
                timeout=attempt_timeout_s,
                stream=stream,
                headers={**(headers or {}), "Nats-Msg-Id": msg_id},
            )
    raise AssertionError("unreachable: stamina re-raises the last failure")
