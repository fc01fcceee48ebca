"""Thin handlers of the offers service: message in → domain decision → tables and outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from services.offers import domain
from services.offers import limits as owner_limits
from services.offers import store as tables
from services.offers.cancels import cancel_outcome, waits_for_end
from services.offers.domain import NeedsQuote, OfferPolicy, RequestState
from services.offers.limits import OwnerLimits
from shared import subjects
from shared.bus import upkeep
from shared.bus.events import publish_phase, resend_smaller
from shared.bus.runtime import Incoming
from shared.bus.store import OutboxRow, Transaction, current_trace_headers
from shared.bus.wiring import Consumer, Publication, Route, Timer, Wiring
from shared.lifecycle import Phase, is_terminal, observe
from shared.messages import (
    BookSession,
    CancelSession,
    DeadLetter,
    QuoteSlots,
    ReleaseHolds,
    SessionEvent,
    SlotsQuoted,
    UpdateResult,
)
from shared.models import (
    DocumentError,
    EnumValueUpdate,
    ExecutionRequest,
    MessageItem,
    OfferSetResponse,
    dump_text,
    load_document,
)
from shared.models.limits import MAX_ANSWER_BYTES
from shared.subjects import SchedulerFact, SchedulerVerb, SubjectError

#: How long a request waits for every pool's quote before it is answered NO (EB_QUOTE_TIMEOUT_S).
DEFAULT_QUOTE_TIMEOUT_S = 20.0


class OffersHandlers:
    def __init__(
        self,
        policy: OfferPolicy,
        limits: OwnerLimits | None = None,
        *,
        quote_timeout_s: float = DEFAULT_QUOTE_TIMEOUT_S,
    ) -> None:
        self.policy = policy
        self.limits = limits or OwnerLimits()
        self.quote_timeout = timedelta(seconds=quote_timeout_s)
        # When this process first looked for overdue requests: after a restart, quotes that arrived
        # while it was down are still in the stream, so no request is overdue before a full timeout.
        self._watching_since: datetime | None = None

    # -- requests ---------------------------------------------------------------------------------

    async def submit_request(self, tx: Transaction, msg: Incoming) -> None:
        owner, request_id = subjects.parse_request(msg.subject)
        if await tables.request_seen(tx, request_id) or await self._refused_by_limit(tx, owner, request_id):
            return
        decision = domain.decide_request(msg.body, request_id, owner, tx.now, self.policy)
        trace = current_trace_headers()
        if isinstance(decision, NeedsQuote):
            await tables.insert_request(
                tx,
                request_id=request_id,
                owner=owner,
                offerset_id=domain.offerset_id_for(request_id),
                state=RequestState.QUOTING,
                request=decision.request,
                expires_at=decision.quote.expires_at,
                pools=decision.pools,
                trace=trace,
            )
            # Every pool that can run the executable is asked; the offer set waits for all answers.
            for pool in decision.pools:
                await tx.publish(
                    subjects.scheduler_command(pool, SchedulerVerb.QUOTE),
                    decision.quote.to_bytes(),
                    f"quote:{pool}:{request_id}",
                )
            return
        # Answered at once: the request was never stored, so it has no state to change.
        await self._answer(tx, request_id, None, owner, decision.offerset, trace)

    async def _answer(
        self,
        tx: Transaction,
        request_id: str,
        state: RequestState | None,
        owner: str,
        offerset: Any,
        trace: dict[str, str],
        pools: dict[str, str] | None = None,
    ) -> None:
        """Store and send the offer set; ``state`` is the stored request's, None if it has no row.

        An offer set too large for the bus is never committed: the pools free its holds and the
        client gets a NO saying why (the relay would otherwise be refused it for ever)."""
        document = dump_text(offerset)  # serialised once: stored and sent as the same text
        size = len(document.encode())
        if size > MAX_ANSWER_BYTES:
            by_pool: dict[str, list[str]] = {}
            for session_id, pool in (pools or {}).items():
                by_pool.setdefault(pool, []).append(session_id)
            too_large = f"release:too-large:{request_id}"
            for pool, session_ids in sorted(by_pool.items()):
                await release_holds(tx, pool, sorted(session_ids), "answer too large", too_large, trace)
            offerset = domain.too_large_offerset(
                domain.offerset_id_for(request_id), size, tx.now, self.policy
            )
            pools = None
            document = dump_text(offerset)
        await tables.save_offerset(tx, request_id, owner, offerset, trace, pools, document)
        if state is not None and domain.request_transition(state, RequestState.ANSWERED):
            await tables.set_request_state(tx, request_id, RequestState.ANSWERED)
        await tx.publish(
            subjects.offerset(owner, request_id),
            document.encode(),
            f"offerset:{request_id}",
            trace_headers=trace,
        )

    async def _refused_by_limit(self, tx: Transaction, owner: str, request_id: str) -> bool:
        """Answer NO, naming the limit, to an owner who holds too many offers already."""
        refusal = owner_limits.request_refusal(await tables.owner_use(tx, owner), self.limits, tx.now)
        if refusal is None:
            return False
        offerset = domain.no_offerset(domain.offerset_id_for(request_id), [refusal], tx.now, self.policy)
        await self._answer(tx, request_id, None, owner, offerset, current_trace_headers())
        return True

    async def request_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        """A request that could never be processed still gets an answer: NO, with the reason."""
        try:
            owner, request_id = subjects.parse_request(msg.subject)
        except SubjectError:
            return  # no one to answer: the dead letter is the record
        message = MessageItem.error(
            "urn:internal-error",
            "The broker could not process this request: ${reason}",
            time=tx.now,
            reason=reason,
        )
        offerset = domain.no_offerset(domain.offerset_id_for(request_id), [message], tx.now, self.policy)
        stored = await tables.get_request(tx, request_id)
        state = stored.state if stored is not None else None
        await self._answer(tx, request_id, state, owner, offerset, current_trace_headers())

    async def slots_quoted(self, tx: Transaction, msg: Incoming) -> None:
        quoted = SlotsQuoted.model_validate_json(msg.body)
        stored = await tables.get_request(tx, quoted.request_id)
        if stored is None or not domain.request_transition(stored.state, RequestState.ANSWERED):
            # Answered already (a repeat, or a quote after the deadline): nothing changes, but holds
            # made for an answer that was given without them are freed at once.
            if stored is not None and quoted.holds and not await tables.offered_in(tx, quoted.request_id):
                held = [hold.session_id for hold in quoted.holds]
                late = f"release:late:{quoted.request_id}"
                await release_holds(tx, quoted.pool, held, "quote too late", late, stored.trace)
            return
        expected = set(stored.pools or [quoted.pool])
        if expected == {quoted.pool}:
            answers = [quoted]  # the only pool asked: nothing to collect
        else:
            await tables.add_quote(tx, quoted)
            answers = await tables.quotes(tx, quoted.request_id)
            if {a.pool for a in answers} < expected:
                return
        holds = [hold for answer in answers for hold in answer.holds]
        reasons = [(answer.pool, reason) for answer in answers for reason in answer.reasons]
        offerset = domain.build_offerset(
            quoted.request_id, stored.request(), holds, reasons, stored.expires_at, tx.now, self.policy
        )
        pools = {hold.session_id: hold.pool for hold in holds}
        await self._answer(tx, quoted.request_id, stored.state, stored.owner, offerset, stored.trace, pools)

    async def quote_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        """A pool's quote that could never be processed: its request is answered NO all the same."""
        try:
            quoted = SlotsQuoted.model_validate_json(msg.body)
        except ValueError:
            return  # no request named: the dead letter is the record
        stored = await tables.get_request(tx, quoted.request_id)
        if stored is None or not domain.request_transition(stored.state, RequestState.ANSWERED):
            return
        message = MessageItem.error(
            "urn:internal-error",
            "The broker could not process the answer of pool ${pool}: ${reason}",
            time=tx.now,
            pool=quoted.pool,
            reason=reason,
        )
        offerset = domain.no_offerset(
            domain.offerset_id_for(quoted.request_id), [message], tx.now, self.policy
        )
        await self._answer(tx, quoted.request_id, stored.state, stored.owner, offerset, stored.trace)

    async def quotes_overdue(self, tx: Transaction) -> None:
        """Requests whose pools have not all answered within the quote timeout are answered NO
        (`urn:service-unavailable`), naming the pools that are silent; holds of pools that did
        answer are freed. A durable timer: the deadline is the request row's age, so a restart of
        this service does not forget it; it gives a restarted service one timeout to read the quotes
        that came while it was down."""
        if self._watching_since is None:
            self._watching_since = tx.now
        if tx.now - self._watching_since < self.quote_timeout:
            return
        for stored in await tables.quoting_since(tx, tx.now - self.quote_timeout):
            # Locked by the read, still QUOTING: no replica answered it meanwhile.
            answered = await tables.quotes(tx, stored.request_id)
            silent = sorted(set(stored.pools) - {answer.pool for answer in answered})
            for answer in answered:
                if answer.holds:
                    held = [hold.session_id for hold in answer.holds]
                    overdue = f"release:overdue:{stored.request_id}"
                    await release_holds(tx, answer.pool, held, "quote timeout", overdue, stored.trace)
            message = MessageItem.error(
                "urn:service-unavailable",
                "No answer from pool ${pools} within ${seconds} s: the scheduler is unavailable; "
                "try again later",
                time=tx.now,
                pools=", ".join(silent) or "(none)",
                seconds=f"{self.quote_timeout.total_seconds():g}",
            )
            offerset = domain.no_offerset(
                domain.offerset_id_for(stored.request_id), [message], tx.now, self.policy
            )
            await self._answer(tx, stored.request_id, stored.state, stored.owner, offerset, stored.trace)

    async def answer_refused(self, tx: Transaction, row: OutboxRow, reason: str) -> None:
        """The bus refused an offer set (the size check before commit should make this impossible):
        the client gets a small NO instead, and the offers it could not see are given back."""
        try:
            owner, request_id = subjects.parse_offerset(row.subject)
        except SubjectError:
            await resend_smaller(tx, row.subject, row.payload, row.headers)  # a phase event, maybe
            return
        offerset_id = domain.offerset_id_for(request_id)
        stranded = await tables.offered_siblings(tx, offerset_id)
        for session_id in stranded:
            await tables.set_phase(tx, session_id, Phase.EXPIRED)
        await self._release(tx, stranded, "EXPIRED", f"release:refused:{request_id}", row.headers)
        offerset = domain.too_large_offerset(offerset_id, len(row.payload), tx.now, self.policy, sent=True)
        document = dump_text(offerset)
        await tables.save_offerset(tx, request_id, owner, offerset, row.headers, None, document)
        # Another id than the refused row's: that one the stream never stored, but to be sure.
        await tx.publish(
            row.subject, document.encode(), f"offerset:{request_id}:refused", trace_headers=row.headers
        )

    # -- updates ----------------------------------------------------------------------------------

    async def update_session(self, tx: Transaction, msg: Incoming) -> None:
        requester, session_id = subjects.parse_update(msg.subject)
        update_id = msg.headers.get("Nats-Msg-Id") or msg.msg_id
        # The answer goes to whoever asked, on their own subject: never to the session's owner.
        reply = subjects.update_result(requester, session_id, update_id)

        async def answer(result: UpdateResult) -> None:
            await tx.publish(reply, result.to_bytes(), f"reply:{session_id}:{update_id}")

        try:
            body = load_document(msg.body)
        except DocumentError as exc:
            body = None
            problem: Phase | MessageItem = MessageItem.error(
                "urn:input-syntax-fail", "The update could not be parsed: ${reason}", time=tx.now, reason=exc
            )
        else:
            problem = domain.parse_update(body, tx.now)
        if isinstance(problem, MessageItem):
            await answer(
                UpdateResult(session_id=session_id, update_id=update_id, applied=False, messages=[problem])
            )
            return
        requested = problem
        view = await tables.session_view(tx, session_id, lock=False)
        if view is not None and tx.LOCKS_ROWS:
            # The offer set first, then the session read again: its phase may have changed meanwhile.
            await tables.lock_offerset(tx, view.offerset_id)
            view = await tables.session_view(tx, session_id)
        if view is None:
            await answer(
                UpdateResult(
                    session_id=session_id,
                    update_id=update_id,
                    applied=False,
                    messages=[
                        MessageItem.error(
                            "urn:not-found", "There is no session ${session}", time=tx.now, session=session_id
                        )
                    ],
                )
            )
            return
        if requested is Phase.ACCEPTED and view.phase is Phase.OFFERED and view.owner == requester:
            refusal = owner_limits.accept_refusal(await tables.owner_use(tx, view.owner), self.limits, tx.now)
            if refusal is not None:
                await answer(
                    UpdateResult(
                        session_id=session_id, update_id=update_id, applied=False, messages=[refusal]
                    )
                )
                return
        siblings = await tables.offered_siblings(tx, view.offerset_id)
        decision = domain.decide_update(view, requester, requested, siblings, tx.now)
        trace = await tables.session_trace(tx, session_id)
        for sid, phase in decision.events:
            await tables.set_phase(tx, sid, phase)
            # The session's phase is the one read above; its siblings were read as the OFFERED ones.
            current = view.phase if sid == session_id else Phase.OFFERED
            await publish_phase(tx, sid, view.owner, current, phase, trace)
        for sid, phase in decision.recorded:
            await tables.set_phase(tx, sid, phase)
        pool = await tables.session_pool(tx, session_id) or self.policy.pool
        release = list(decision.release)
        if decision.book:
            by_pool = await tables.pools_of(tx, list(decision.siblings))
            # Siblings in other pools are released there; the booking pool frees its own siblings.
            release += [s for p, ids in by_pool.items() if (p or self.policy.pool) != pool for s in ids]
            document = await tables.session_document(tx, session_id)
            choice = self.policy.choice(pool)
            book = BookSession(
                session_id=session_id,
                owner=view.owner,
                siblings=[s for s in decision.siblings if s not in release],
                executable=document.get("executable") or {},
                storage=document.get("storage") or [],
                data=document.get("data") or [],
                volumes=(document.get("compute") or {}).get("volumes") or [],
                platform=choice.platform if choice else self.policy.platform,
            )
            await tx.publish(
                subjects.scheduler_command(pool, SchedulerVerb.BOOK),
                book.to_bytes(),
                f"book:{session_id}",
                trace_headers=trace,
            )
        await self._release(tx, release, requested.value, f"release:{update_id}", trace)
        if decision.forward_cancel:
            await tx.publish(
                subjects.scheduler_command(pool, SchedulerVerb.CANCEL),
                CancelSession(session_id=session_id, reason="cancelled by its owner").to_bytes(),
                f"cancel:{session_id}",
                trace_headers=trace,
            )
        if waits_for_end(decision.applied, decision.forward_cancel, decision.new_phase):
            # Answered when the session has ended (`session_event`): the answer shows CANCELLED.
            await tables.add_pending_cancel(tx, session_id, update_id, requester)
            return
        await answer(
            UpdateResult(
                session_id=session_id,
                update_id=update_id,
                applied=decision.applied,
                phase=decision.new_phase.value if decision.new_phase else None,
                messages=list(decision.messages),
            )
        )

    async def update_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        try:
            requester, session_id = subjects.parse_update(msg.subject)
        except SubjectError:
            return  # no one to answer: the dead letter is the record
        update_id = msg.headers.get("Nats-Msg-Id") or msg.msg_id
        result = UpdateResult(
            session_id=session_id,
            update_id=update_id,
            applied=False,
            messages=[
                MessageItem.error(
                    "urn:internal-error",
                    "The broker could not apply this update: ${reason}",
                    time=tx.now,
                    reason=reason,
                )
            ],
        )
        await tx.publish(
            subjects.update_result(requester, session_id, update_id),
            result.to_bytes(),
            f"reply:{session_id}:{update_id}",
        )

    # -- read model and timers --------------------------------------------------------------------

    async def session_event(self, tx: Transaction, msg: Incoming) -> None:
        event = SessionEvent.model_validate_json(msg.body)
        view = await tables.session_view(tx, event.session_id)
        if view is None:
            return
        reported = Phase(event.phase)
        phase = observe(view.phase, reported)
        await tables.record_event(
            tx,
            event.session_id,
            phase,
            [m.model_dump(mode="json", exclude_none=True) for m in event.messages],
            event.outputs,
            event.connectors,
        )
        if is_terminal(phase):
            # In the same transaction as the phase: a requester who reads the session after the
            # answer finds it ended.
            for pending in await tables.take_pending_cancels(tx, event.session_id):
                result = cancel_outcome(event.session_id, pending.update_id, phase, event.messages, tx.now)
                await tx.publish(
                    subjects.update_result(pending.requester, event.session_id, pending.update_id),
                    result.to_bytes(),
                    f"reply:{event.session_id}:{pending.update_id}",
                )

    async def expire_offers(self, tx: Transaction) -> None:
        due = await tables.due_offers(tx, tx.now)
        expired = domain.expired(due, tx.now)
        views = {view.session_id: view for view in due}
        for session_id in expired:
            await tables.set_phase(tx, session_id, Phase.EXPIRED)
            trace = await tables.session_trace(tx, session_id)
            view = views[session_id]
            await publish_phase(tx, session_id, view.owner, view.phase, Phase.EXPIRED, trace)
        if expired:
            await self._release(tx, expired, "EXPIRED", f"release:expired:{expired[0]}", None)

    async def _release(
        self, tx: Transaction, session_ids: list[str], reason: str, msg_id: str, trace: dict[str, str] | None
    ) -> None:
        """Tell each pool to free its own holds among ``session_ids``."""
        if not session_ids:
            return
        for pool, ids in (await tables.pools_of(tx, session_ids)).items():
            await release_holds(tx, pool or self.policy.pool, ids, reason, msg_id, trace)


async def release_holds(
    tx: Transaction, pool: str, session_ids: list[str], reason: str, msg_id: str, trace: dict[str, str] | None
) -> None:
    """Tell `pool` to free these holds; the message id is ``<msg_id>:<pool>`` (one per pool)."""
    await tx.publish(
        subjects.scheduler_command(pool, SchedulerVerb.RELEASE),
        ReleaseHolds(session_ids=session_ids, reason=reason).to_bytes(),
        f"{msg_id}:{pool}",
        trace_headers=trace,
    )


# -- wiring -----------------------------------------------------------------------------------------

SERVICE = "offers"
#: Phases only the offers service decides (OFFERED is carried by the offer set, never as an event).
OWN_PHASES = frozenset({Phase.OFFERED, Phase.ACCEPTED, Phase.REJECTED, Phase.EXPIRED})


def wiring(handlers: OffersHandlers, pools: Sequence[str]) -> Wiring:
    """Everything the offers service hears and says on the bus."""
    # The read model follows the phases the scheduler and the launcher report. The ones offers
    # decides itself (accept, reject, expiry) are already in its tables when it publishes them, so
    # the server is asked not to deliver them back.
    reported = tuple(
        Route(subjects.SESSION, handlers.session_event, SessionEvent, {"phase": phase.value})
        for phase in Phase
        if phase not in OWN_PHASES
    )
    return Wiring(
        SERVICE,
        consumers=(
            Consumer(
                "offers-requests",
                (Route(subjects.REQUEST, handlers.submit_request, ExecutionRequest),),
                on_dead=handlers.request_dead,
            ),
            Consumer(
                "offers-quotes",
                (
                    Route(
                        subjects.SCHEDULER_EVENT,
                        handlers.slots_quoted,
                        SlotsQuoted,
                        {"fact": SchedulerFact.QUOTED.value},
                    ),
                ),
                on_dead=handlers.quote_dead,
            ),
            Consumer(
                "offers-updates",
                (Route(subjects.UPDATE, handlers.update_session, EnumValueUpdate),),
                on_dead=handlers.update_dead,
            ),
            Consumer("offers-events", reported),
        ),
        publishes=(
            Publication(subjects.OFFERSET, OfferSetResponse),
            Publication(subjects.UPDATE_RESULT, UpdateResult),
            *(
                Publication(subjects.SESSION, SessionEvent, {"phase": phase.value})
                for phase in sorted(OWN_PHASES - {Phase.OFFERED})
            ),
            *(
                Publication(subjects.SCHEDULER_COMMAND, model, {"pool": pool, "verb": verb.value})
                for pool in pools
                for verb, model in (
                    (SchedulerVerb.QUOTE, QuoteSlots),
                    (SchedulerVerb.BOOK, BookSession),
                    (SchedulerVerb.RELEASE, ReleaseHolds),
                    (SchedulerVerb.CANCEL, CancelSession),
                )
            ),
            Publication(subjects.DEAD_LETTER, DeadLetter, {"service": SERVICE}),
            *upkeep.publications(SERVICE),
        ),
        timers=(
            Timer("offers-expiry", 1.0, handlers.expire_offers),
            Timer("offers-quote-deadline", 1.0, handlers.quotes_overdue),
        ),
        on_refused=handlers.answer_refused,
    )
