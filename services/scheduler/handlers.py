"""Thin handlers of the scheduler: the single writer of its pool's holds and bookings."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from services.scheduler import domain
from services.scheduler import store as tables
from services.scheduler.domain import Capacity, Reservation, SlotRequest
from services.scheduler.estimates import (
    REMOTE_SOURCE,
    LearnedEstimates,
    PreparationEstimate,
    TransferTable,
    data_needs,
    estimate_preparation,
)
from services.scheduler.ledger import Ledger
from services.scheduler.rucio import ReplicaSource, resolve_needs
from services.scheduler.states import BOOKED_ONCE, Release, ReservationState, freed
from shared import iso8601, subjects
from shared.bus import upkeep
from shared.bus.events import publish_phase, resend_smaller
from shared.bus.runtime import Incoming
from shared.bus.store import OutboxRow, Store, Transaction, current_trace_headers
from shared.bus.wiring import Consumer, Handler, Publication, Reply, Responder, Route, Timer, Wiring
from shared.lifecycle import TERMINAL, Phase, is_terminal
from shared.messages import (
    BookSession,
    CancelSession,
    DeadLetter,
    FailSession,
    Hold,
    LaunchSession,
    Message,
    PreparationMeasured,
    QuoteSlots,
    ReleaseHolds,
    SessionEvent,
    SlotsQuoted,
    StopSession,
)
from shared.models import MessageItem
from shared.models.limits import MAX_DURATION
from shared.pools import Pool
from shared.subjects import LauncherFact, LauncherVerb, SchedulerFact, SchedulerVerb


class SchedulerHandlers:
    """The handlers of one pool; the scheduler process runs one instance per configured pool."""

    def __init__(
        self,
        pool: Pool,
        hold_grace_s: int,
        replicas: ReplicaSource | None = None,
        ledgers: dict[str, Ledger] | None = None,
    ) -> None:
        self.config = pool
        self.pool = pool.name
        self.platform = pool.platform
        self.capacity = Capacity(pool.cores, pool.memory_gib, pool.storage_gib)
        # The in-memory index of every pool's active reservations, shared by the pools' handlers so
        # any of them can free a session's capacity. It mirrors the table message by message (a batch's
        # later messages must see its earlier holds) and a rolled-back message's changes are undone.
        self.ledgers = ledgers if ledgers is not None else {}
        self.ledger = self.ledgers.setdefault(pool.name, Ledger())
        self.grid = timedelta(seconds=pool.grid_s)
        self.hold_grace_s = hold_grace_s
        self.replicas = replicas
        self.transfer = TransferTable.from_mapping(
            pool.transfer,
            default=pool.default_transfer_s_per_gb,
            staging_delay_s=pool.staging_delay_s,
        )
        self.learned: LearnedEstimates | None = None

    async def load(self, store: Store) -> None:
        self.ledger = Ledger(await tables.active(store, self.pool))
        self.ledgers[self.pool] = self.ledger

    async def free(
        self, tx: Transaction, session_id: str, reason: Release, state: ReservationState | None = None
    ) -> bool:
        """Give a reservation's capacity back, for `reason`: the one way capacity is freed.

        The reservation moves to the state `states.freed` names (a hold is released, a booking
        ended), in the table and the ledger. `state` is its current state if the caller has read
        it. False if there is nothing to free: no such reservation, or it is free already.
        """
        if state is None:
            state = await tables.state_of(tx, session_id)
            if state is None:
                return False
        if not await tables.set_state(tx, session_id, state, freed(state, reason)):
            return False
        for ledger in self.ledgers.values():
            self._free_now(tx, ledger, session_id)
        return True

    @staticmethod
    def _free_now(tx: Transaction, ledger: Ledger, session_id: str) -> None:
        """Give the capacity back in the ledger at once, like holds, so the ledger follows a batch's
        messages in order. Taken again if this message's part of the batch rolls back."""
        taken = ledger.discard(session_id)
        if taken is not None:
            tx.on_rollback(lambda: ledger.add(taken))

    def _hold_now(self, tx: Transaction, reservation: Reservation) -> None:
        """Take capacity in the ledger at once, not at commit: the next message of the same batch
        must plan around it. Undone if this message's part of the batch rolls back."""
        self.ledger.add(reservation)
        ledger = self.ledger
        tx.on_rollback(lambda: ledger.discard(reservation.id))

    async def _learned(self, tx: Transaction) -> LearnedEstimates:
        if self.learned is None:
            self.learned = await tables.load_learned(tx, self.pool)
        return self.learned

    async def estimate(
        self, tx: Transaction, quote: QuoteSlots
    ) -> tuple[PreparationEstimate | None, list[str]]:
        """Where the data is decides how long preparation takes: the more remote, the later the start."""
        needs = data_needs(quote.data)
        if not needs:
            return None, []
        problems: list[str] = []
        if self.replicas is not None and any(n.did and not n.replicas for n in needs):
            # A Rucio look-up inside the pool's transaction: bounded by the client's timeout and cached.
            needs, problems = await resolve_needs(needs, self.replicas)
            if problems:
                return None, problems
        estimate = estimate_preparation(
            needs, self.config.site, self.pool, self.transfer, await self._learned(tx), self.config.prepare_s
        )
        return estimate, []

    async def command_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        """A quote that could never be processed is still answered, with no holds and the reason, so
        the request gets its NO now rather than at the quote timeout; a booking that could never be
        made fails its session (the launcher publishes FAILED). Releases and cancels wait for no
        one: their dead letter is the record."""
        if msg.subject.endswith(f".{SchedulerVerb.BOOK.value}"):
            try:
                book = BookSession.model_validate_json(msg.body)
            except ValueError:
                return
            why = MessageItem.error(
                "urn:internal-error",
                "The broker could not book this session: ${reason}",
                time=tx.now,
                reason=reason,
            )
            await self._fail(tx, book.session_id, book.owner, why)
            return
        if not msg.subject.endswith(f".{SchedulerVerb.QUOTE.value}"):
            return
        try:
            quote = QuoteSlots.model_validate_json(msg.body)
        except ValueError:
            return
        answer = SlotsQuoted(
            request_id=quote.request_id,
            pool=self.pool,
            reasons=[f"the scheduler could not process this request: {reason}"[:1000]],
        )
        await tx.publish(
            subjects.scheduler_event(self.pool, SchedulerFact.QUOTED),
            answer.to_bytes(),
            f"quoted:{self.pool}:{quote.request_id}",
        )

    async def quote(self, tx: Transaction, msg: Incoming) -> None:
        quote = QuoteSlots.model_validate_json(msg.body)
        holds, reasons = await self._hold_slots(tx, quote)
        answer = SlotsQuoted(request_id=quote.request_id, pool=self.pool, holds=holds, reasons=reasons)
        await tx.publish(
            subjects.scheduler_event(self.pool, SchedulerFact.QUOTED),
            answer.to_bytes(),
            f"quoted:{self.pool}:{quote.request_id}",
        )

    async def _hold_slots(self, tx: Transaction, quote: QuoteSlots) -> tuple[list[Hold], list[str]]:
        """Hold up to max_offers slots for the quote, or say in words why there are none."""
        reasons = self.check_limits(quote)
        if reasons:
            return [], reasons
        estimate, problems = await self.estimate(tx, quote)
        if problems:
            return [], problems
        items = estimate.per_item if estimate else {}
        if estimate is not None and not estimate.total_s <= MAX_DURATION.total_seconds():  # NaN too
            return [], [
                f"preparing the data on pool '{self.pool}' would take longer than "
                f"{iso8601.format_duration(MAX_DURATION)}: {'; '.join(estimate.reasons)}"
            ]
        prepare_s = max(quote.prepare_s, self.config.prepare_s, round(estimate.total_s) if estimate else 0)
        # Preparation pushes the earliest start back, but never outside the requested window.
        earliest = max(quote.earliest_start, quote.requested_at + timedelta(seconds=prepare_s))
        if earliest > quote.latest_start:
            why = f": {'; '.join(estimate.reasons)}" if estimate and estimate.reasons else ""
            return [], [
                f"the requested start window ends at {iso8601.format_instant(quote.latest_start)} but "
                f"preparation on pool '{self.pool}' takes "
                f"{iso8601.format_duration(timedelta(seconds=prepare_s))} (earliest start "
                f"{iso8601.format_instant(earliest)}){why}"
            ]
        request = SlotRequest(
            cores_min=quote.cores_min,
            cores_max=min(quote.cores_max, self.config.limits.cores or quote.cores_max),
            memory_min=quote.memory_min,
            memory_max=min(quote.memory_max, self.config.limits.memory_gib or quote.memory_max),
            duration=timedelta(seconds=quote.duration_s),
            earliest_start=earliest,
            latest_start=quote.latest_start,
            max_offers=min(quote.max_offers, self.config.max_offers),
            storage_min=quote.storage_min,
        )
        result = self.ledger.plan(self.pool, self.capacity, request, grid=self.grid)
        steps = {f"data:{name}": item.seconds for name, item in items.items()}
        sources = {name: item.source for name, item in items.items()}
        holds: list[Hold] = []
        for index, slot in enumerate(result.slots):
            session_id = domain.hold_session_id(self.pool, quote.request_id, quote.requested_at, index)
            reservation = Reservation(
                session_id, slot.start, slot.end, slot.cores, slot.memory_gib, slot.storage_gib
            )
            await tables.insert_hold(
                tx,
                self.pool,
                reservation,
                quote.request_id,
                quote.owner,
                prepare_s,
                quote.expires_at,
                sources,
            )
            self._hold_now(tx, reservation)
            holds.append(
                Hold(
                    session_id=session_id,
                    pool=self.pool,
                    start=slot.start,
                    end=slot.end,
                    cores=slot.cores,
                    memory_gib=slot.memory_gib,
                    prepare_s=prepare_s,
                    steps=steps,
                )
            )
        return holds, list(result.reasons)

    def check_limits(self, quote: QuoteSlots) -> list[str]:
        """Per-request limits of the pool, in words; the planner judges capacity over time."""
        limits = self.config.limits
        reasons = []
        if limits.cores is not None and quote.cores_min > limits.cores:
            reasons.append(
                f"requested {quote.cores_min} cores (minimum) but pool '{self.pool}' allows at most "
                f"{limits.cores} per request"
            )
        if limits.memory_gib is not None and quote.memory_min > limits.memory_gib:
            reasons.append(
                f"requested {quote.memory_min} GiB of memory (minimum) but pool '{self.pool}' allows at "
                f"most {limits.memory_gib} GiB per request"
            )
        # The offers service refuses this first (at once, naming the limit); a site's scheduler
        # checks it again, since its own pools file is the one that binds its pool.
        if limits.storage_gib is not None and quote.storage_min > limits.storage_gib:
            reasons.append(
                f"requested {quote.storage_min} GiB of storage (minimum) but pool '{self.pool}' allows "
                f"at most {limits.storage_gib} GiB per request"
            )
        if quote.duration_s > limits.duration_s:
            reasons.append(
                f"requested a duration of {iso8601.format_duration(timedelta(seconds=quote.duration_s))} "
                f"but pool '{self.pool}' allows at most "
                f"{iso8601.format_duration(timedelta(seconds=limits.duration_s))}"
            )
        return reasons

    async def book(self, tx: Transaction, msg: Incoming) -> None:
        command = BookSession.model_validate_json(msg.body)
        for sibling in command.siblings:
            await self.free(tx, sibling, Release.SIBLING_BOOKED)
        row = await tables.get(tx, command.session_id)
        if row is None:
            await self._fail(
                tx,
                command.session_id,
                command.owner,
                MessageItem.error(
                    "urn:not-found",
                    "The scheduler holds no slot for session ${session}",
                    time=tx.now,
                    session=command.session_id,
                ),
            )
            return
        if row.state in BOOKED_ONCE:
            return  # booked already (and maybe launched or ended since): a repeated book
        if row.state is ReservationState.RELEASED:
            # The hold lapsed while the accept was in flight: book it again only if it still fits.
            others = self.ledger.overlapping(row.start, row.end)
            if not domain.fits(self.capacity, others, row.reservation()):
                # It stays released: it never became a booking.
                await self._fail(
                    tx,
                    row.session_id,
                    row.owner,
                    MessageItem.error(
                        "urn:offer-expired",
                        "The offer's hold expired before it was accepted and its slot is no longer free",
                        time=tx.now,
                    ),
                )
                return
            self._hold_now(tx, row.reservation())
        launch_at = max(tx.now, row.start - timedelta(seconds=row.prepare_s))
        launch = LaunchSession(
            session_id=row.session_id,
            owner=command.owner,
            executable=command.executable,
            storage=command.storage,
            data=command.data,
            volumes=command.volumes,
            pool=self.pool,
            cores=row.cores,
            memory_gib=row.memory_gib,
            start=row.start,
            end=row.end,
        )
        trace = current_trace_headers()
        await tables.book(tx, row.session_id, row.state, launch_at, launch.model_dump(mode="json"), trace)
        # Offers publishes ACCEPTED before it sends the book, so that is the phase WAITING follows.
        await publish_phase(tx, row.session_id, row.owner, Phase.ACCEPTED, Phase.WAITING, trace)
        if launch_at <= tx.now:
            await self._launch(tx, row.session_id, launch, trace)

    async def _fail(self, tx: Transaction, session_id: str, owner: str, why: MessageItem) -> None:
        """A booking that cannot be made: the session fails, and FAILED is the launcher's to publish."""
        command = FailSession(session_id=session_id, owner=owner, messages=[why])
        await tx.publish(
            subjects.launcher_command(self.pool, LauncherVerb.FAIL),
            command.to_bytes(),
            f"fail:{session_id}",
            trace_headers=current_trace_headers(),
        )

    async def _launch(
        self, tx: Transaction, session_id: str, launch: LaunchSession, trace: dict[str, str]
    ) -> None:
        await tables.set_state(tx, session_id, ReservationState.BOOKED, ReservationState.LAUNCHED)
        await tx.publish(
            subjects.launcher_command(self.pool, LauncherVerb.LAUNCH),
            launch.to_bytes(),
            f"launch:{session_id}",
            trace_headers=trace,
        )

    async def measured(self, tx: Transaction, msg: Incoming) -> None:
        report = PreparationMeasured.model_validate_json(msg.body)
        if not await tables.record_preparation(tx, report.session_id, report.seconds, report.steps):
            return  # a second report of one session (a resend) must not count as a second sample
        row = await tables.get(tx, report.session_id)
        if row is None:
            return
        learned = await self._learned(tx)
        for step, seconds in report.steps.items():
            role, _, name = step.partition(":")
            if role == "data":
                source = row.sources.get(name) or REMOTE_SOURCE
                learned = learned.record(source, self.pool, seconds)
        self.learned = learned
        await tables.save_learned(tx, self.pool, learned)

    async def release(self, tx: Transaction, msg: Incoming) -> None:
        command = ReleaseHolds.model_validate_json(msg.body)
        for session_id in command.session_ids:
            await self.free(tx, session_id, Release.OFFER_CLOSED)

    async def cancel(self, tx: Transaction, msg: Incoming) -> None:
        """The owner cancelled a session held or booked here: the launcher, owner of CANCELLED, ends it.

        A session not launched yet gives its capacity back at once and will never be launched; the
        launcher, which has no run for it, answers "Cancelled before launch". A launched one keeps
        its capacity until its run has stopped (its terminal phase frees it).
        """
        command = CancelSession.model_validate_json(msg.body)
        row = await tables.get(tx, command.session_id)
        if row is None or row.state is ReservationState.ENDED:
            return  # nothing held here, or the session is over (or its cancel was forwarded already)
        if row.state is not ReservationState.LAUNCHED:
            await self.free(tx, row.session_id, Release.CANCELLED, row.state)
        stop = StopSession(session_id=row.session_id, owner=row.owner, reason=command.reason)
        await tx.publish(
            subjects.launcher_command(self.pool, LauncherVerb.STOP),
            stop.to_bytes(),
            f"stop:{row.session_id}",
            trace_headers=row.trace or current_trace_headers(),
        )

    async def session_event(self, tx: Transaction, msg: Incoming) -> None:
        event = SessionEvent.model_validate_json(msg.body)
        if is_terminal(Phase(event.phase)):
            # An offer that ends (rejected, expired, cancelled) releases its hold; a booking ends early
            # when its session does. Either way the capacity is free from now on.
            await self.free(tx, event.session_id, Release.SESSION_ENDED)

    async def tick(self, tx: Transaction) -> None:
        for session_id in await tables.expired_holds(tx, self.pool, self.hold_grace_s):
            await self.free(tx, session_id, Release.HOLD_EXPIRED, ReservationState.HELD)
        for row in await tables.due_launches(tx, self.pool):
            if row.launch is not None:
                await self._launch(tx, row.session_id, LaunchSession.model_validate(row.launch), row.trace)


# -- wiring -----------------------------------------------------------------------------------------

SERVICE = "scheduler"
#: The phases the scheduler owns (docs/architecture.md): a booking made. The end of a session that
#: never launched (cancelled, or a booking that could not be made) is the launcher's to publish.
OWN_PHASES = frozenset({Phase.WAITING})


def wiring(
    pools: Mapping[str, SchedulerHandlers], answer_pools: Responder, site: str | None = None
) -> Wiring:
    """Everything the scheduler hears and says: one single-writer consumer per pool. A scheduler
    at a site (`shared.ops.site`) has its own events durable: sharing the hub's, the two would
    each receive only some of the sessions' ends."""
    # Session ids are unique across pools, so any pool's handler can end any booking. Only the
    # terminal phases free capacity, so only they are delivered: a session has seven phase events and
    # receiving the other five cost the scheduler as much as a quote each.
    first = next(iter(pools.values()))
    ended = tuple(
        Route(subjects.SESSION, first.session_event, SessionEvent, {"phase": phase.value})
        for phase in sorted(TERMINAL)
    )
    measured = tuple(
        Route(
            subjects.LAUNCHER_EVENT,
            handlers.measured,
            PreparationMeasured,
            {"pool": name, "fact": LauncherFact.MEASURED.value},
        )
        for name, handlers in pools.items()
    )
    return Wiring(
        SERVICE,
        consumers=(
            *(_pool_commands(name, handlers) for name, handlers in pools.items()),
            Consumer("scheduler-events" if site is None else f"scheduler-events-at-{site}", ended + measured),
        ),
        publishes=(
            *(
                Publication(subjects.SCHEDULER_EVENT, SlotsQuoted, {"pool": name, "fact": "quoted"})
                for name in pools
            ),
            *(
                Publication(subjects.LAUNCHER_COMMAND, model, {"pool": name, "verb": verb.value})
                for name in pools
                for verb, model in (
                    (LauncherVerb.LAUNCH, LaunchSession),
                    (LauncherVerb.STOP, StopSession),
                    (LauncherVerb.FAIL, FailSession),
                )
            ),
            *(
                Publication(subjects.SESSION, SessionEvent, {"phase": phase.value})
                for phase in sorted(OWN_PHASES)
            ),
            Publication(subjects.DEAD_LETTER, DeadLetter, {"service": SERVICE}),
            *upkeep.publications(SERVICE),
        ),
        replies=(Reply(subjects.POOLS_INFO, answer_pools),),
        timers=tuple(Timer(f"scheduler-{name}-timers", 0.2, h.tick) for name, h in pools.items()),
        on_start=tuple(handlers.load for handlers in pools.values()),
        on_refused=_phase_refused,
    )


async def _phase_refused(tx: Transaction, row: OutboxRow, reason: str) -> None:
    """A phase event the bus refused goes again without its bulk (`resend_smaller`)."""
    await resend_smaller(tx, row.subject, row.payload, row.headers)


def _pool_commands(name: str, handlers: SchedulerHandlers) -> Consumer:
    """One consumer for all of a pool's commands keeps book → cancel in the order they were sent."""
    commands: tuple[tuple[SchedulerVerb, type[Message], Handler], ...] = (
        (SchedulerVerb.QUOTE, QuoteSlots, handlers.quote),
        (SchedulerVerb.BOOK, BookSession, handlers.book),
        (SchedulerVerb.RELEASE, ReleaseHolds, handlers.release),
        (SchedulerVerb.CANCEL, CancelSession, handlers.cancel),
    )
    return Consumer(
        f"scheduler-{name}",
        tuple(
            Route(subjects.SCHEDULER_COMMAND, handler, model, {"pool": name, "verb": verb.value})
            for verb, model, handler in commands
        ),
        on_dead=handlers.command_dead,
    )
