"""What keeps a service's files and the streams bounded, and what it checks after a crash.

Run beside the handlers by the runtime (`ServiceRuntime.start`):

* at start, `reconcile_outbox`: messages the stream confirmed shortly before the service stopped are
  published again. A stream that still holds one answers "duplicate" (its duplicate window spans the
  look-back) and stores nothing; one the stream lost, because its machine crashed before nats-server
  wrote it to disk (``EB_DURABILITY=fast`` syncs every two minutes), is stored again, and reported;
* at start as well, the inbox half (`shared.bus.replay`, run by `ServiceRuntime._replay_inbox`):
  messages received over the same look-back that the service's store forgot are applied again;
* every hour, the SQLite WAL is checkpointed with truncation, so it does not keep the size of the
  busiest moment;
* every few minutes, the streams' use against their ``max_bytes``: above `FILL_WARNING` a warning
  is logged (a structured one, ``event=stream_filling``), because a full stream drops its oldest
  messages, and, for a service whose wiring declares it (`publications`), a `StreamFilling` event is
  published through the outbox on ``eb.ops.<service>.stream_filling``, which operators subscribe to
  (``eb.ops.>``). Its ``Nats-Msg-Id`` names the stream, the step passed (80, 90, 100 %) and the hour:
  a service says each once (its outbox remembers), and the stream's duplicate window keeps one of
  the copies the services send within it.

Pruning finished sessions is each service's own (a `Timer` of its wiring, see `shared.bus.retention`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import subjects
from shared.bus.store import OutboxRow, Store, Transaction
from shared.bus.streams import DUPLICATE_WINDOW_S, MAX_AGE_S
from shared.bus.wiring import Publication, Wiring
from shared.messages import StreamFilling
from shared.subjects import OpsFact

log = logging.getLogger(__name__)

#: Warn when a stream holds more than this share of its ``max_bytes``.
FILL_WARNING = 0.8
#: The warnings' steps: one event per stream for each tenth passed from `FILL_WARNING` on, per hour.
FILL_STEP = 0.1
#: nats-server's default sync interval: what ``fast`` durability can lose on a machine crash.
SERVER_SYNC_INTERVAL_S = 120.0
#: How far back the start-up check republishes: the sync interval with a margin, and well inside
#: the duplicate window, so that a message the stream still holds is recognised as a duplicate.
RECONCILE_LOOK_BACK_S = min(SERVER_SYNC_INTERVAL_S + 60.0, DUPLICATE_WINDOW_S / 2)
CHECKPOINT_EVERY_S = 3600.0
FILL_CHECK_EVERY_S = 300.0


@dataclass(frozen=True)
class StreamUse:
    stream: str
    bytes: int
    max_bytes: int
    messages: int = 0

    @property
    def share(self) -> float:
        return self.bytes / self.max_bytes if self.max_bytes > 0 else 0.0


def filling(uses: Sequence[StreamUse], threshold: float = FILL_WARNING) -> list[StreamUse]:
    """The streams past ``threshold`` of their byte limit (a stream without one never is)."""
    return [use for use in uses if use.max_bytes > 0 and use.share >= threshold]


async def stream_uses(js: JetStreamContext) -> list[StreamUse]:
    """Each stream's bytes and limit (``STREAM.INFO``, which every service may ask)."""
    uses = []
    for name in MAX_AGE_S:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            continue
        state = info.state
        uses.append(StreamUse(name, int(state.bytes or 0), int(info.config.max_bytes or -1), state.messages))
    return uses


def warn_filling(service: str, uses: Sequence[StreamUse]) -> list[StreamUse]:
    full = filling(uses)
    for use in full:
        log.warning(
            "%s: stream %s holds %d of its %d bytes (%.0f %%): when full it drops its oldest messages; "
            "raise EB_%s_MAX_BYTES or shorten its age",
            service,
            use.stream,
            use.bytes,
            use.max_bytes,
            100 * use.share,
            "COMMANDS" if use.stream == subjects.COMMANDS_STREAM else "EVENTS",
            extra={"event": "stream_filling", "stream": use.stream, "share": round(use.share, 3)},
        )
    return full


def publications(service: str) -> tuple[Publication, ...]:
    """What the upkeep of ``service`` publishes, for its wiring table (hence its permissions, the
    AsyncAPI document and the streams' subjects)."""
    fact = {"service": service, "fact": OpsFact.STREAM_FILLING.value}
    return (Publication(subjects.OPS, StreamFilling, fact),)


def announces_filling(wiring: Wiring) -> bool:
    subject = subjects.ops_event(wiring.service, OpsFact.STREAM_FILLING)
    return any(p.subject == subject for p in wiring.publishes)


def step(use: StreamUse) -> float:
    """The last step of `FILL_STEP` passed from `FILL_WARNING` on: 0.8 at 85 %, 1.0 when full."""
    tenths = math.floor(round(use.share / FILL_STEP, 6))
    return min(1.0, round(tenths * FILL_STEP, 1))


def filling_msg_id(use: StreamUse, now: datetime) -> str:
    """The same for every service and check within the hour: the stream keeps one of them."""
    return f"ops:stream_filling:{use.stream}:{round(100 * step(use))}:{now.astimezone(UTC):%Y%m%dT%H}"


async def announce_filling(tx: Transaction, service: str, full: Sequence[StreamUse]) -> int:
    """Queue one `StreamFilling` per stream in ``full`` not yet announced by this service this hour
    at its step; how many were queued."""
    subject = subjects.ops_event(service, OpsFact.STREAM_FILLING)
    queued = 0
    for use in full:
        msg_id = filling_msg_id(use, tx.now)
        # The outbox keeps sent rows for a while: the one place that remembers across restarts.
        if await tx.fetchone("SELECT 1 FROM outbox WHERE msg_id = ?", (msg_id,)) is not None:
            continue
        event = StreamFilling(
            stream=use.stream,
            bytes=use.bytes,
            max_bytes=use.max_bytes,
            fraction=round(use.share, 3),
            messages=use.messages,
            threshold=step(use),
            noticed_at=tx.now,
        )
        await tx.publish(subject, event.to_bytes(), msg_id)
        queued += 1
    return queued


@dataclass(frozen=True)
class Reconciled:
    """What the start-up check republished: ``restored`` the stream had lost."""

    checked: int
    restored: int
    failed: int


async def reconcile_outbox(
    js: JetStreamContext, store: Store, service: str, now: datetime | None = None
) -> Reconciled:
    now = now or datetime.now(UTC)
    rows = await store.sent_since(now - timedelta(seconds=RECONCILE_LOOK_BACK_S))
    restored = failed = 0
    for chunk in _chunks(rows, 200):
        outcomes = await asyncio.gather(*(_republish(js, row) for row in chunk), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                failed += 1
            elif outcome:
                restored += 1
    if restored:
        log.warning(
            "%s: the stream had lost %d of the %d messages confirmed in the last %.0f s (a crash of its "
            "machine?); they were published again",
            service,
            restored,
            len(rows),
            RECONCILE_LOOK_BACK_S,
            extra={"event": "outbox_restored", "restored": restored},
        )
    if failed:
        log.warning("%s: %d messages could not be checked against the stream at start", service, failed)
    return Reconciled(len(rows), restored, failed)


async def _republish(js: JetStreamContext, row: OutboxRow) -> bool:
    """True if the stream stored it anew (it had lost it), False if it still held it."""
    ack = await js.publish(
        row.subject,
        row.payload,
        stream=subjects.stream_for(row.subject),
        headers={**row.headers, "Nats-Msg-Id": row.msg_id},
    )
    return not ack.duplicate


def _chunks(rows: Sequence[OutboxRow], size: int) -> list[Sequence[OutboxRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def upkeep_loop(
    service: str,
    store: Store,
    js: JetStreamContext,
    stopping: asyncio.Event,
    *,
    every: Mapping[str, float] | None = None,
    announce: Callable[[Sequence[StreamUse]], Awaitable[object]] | None = None,
) -> None:
    """Checkpoint-with-truncation and the fill check, each at its own interval, until ``stopping``;
    ``announce`` is given the streams past the warning (to publish `StreamFilling` events)."""
    intervals = {"checkpoint": CHECKPOINT_EVERY_S, "fill": FILL_CHECK_EVERY_S, **(every or {})}
    loop = asyncio.get_running_loop()
    due = {"checkpoint": loop.time() + intervals["checkpoint"], "fill": loop.time()}
    while not stopping.is_set():
        try:
            if loop.time() >= due["fill"]:
                due["fill"] = loop.time() + intervals["fill"]
                full = warn_filling(service, await stream_uses(js))
                if full and announce is not None:
                    await announce(full)
            if loop.time() >= due["checkpoint"]:
                due["checkpoint"] = loop.time() + intervals["checkpoint"]
                await store.checkpoint(truncate=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next round tries again; nothing depends on one round
            log.warning("%s: upkeep round failed: %s", service, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=max(0.05, min(due.values()) - loop.time()))
