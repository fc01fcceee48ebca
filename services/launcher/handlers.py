"""Thin handlers of the launcher: record launches and stops; the drivers do the slow work."""

from __future__ import annotations

import json
from collections.abc import Sequence

from services.launcher import store as tables
from services.launcher.driver import Drivers
from shared import subjects
from shared.bus import upkeep
from shared.bus.events import publish_phase, resend_smaller
from shared.bus.runtime import Incoming
from shared.bus.store import OutboxRow, Transaction, current_trace_headers
from shared.bus.wiring import Consumer, Publication, Route, Wiring
from shared.lifecycle import Phase
from shared.messages import (
    DeadLetter,
    FailSession,
    LaunchSession,
    PreparationMeasured,
    SessionEvent,
    StopSession,
)
from shared.models import MessageItem
from shared.subjects import LauncherFact, LauncherVerb


class LauncherHandlers:
    """The handlers of one pool's launch commands; the launcher runs one instance per pool."""

    def __init__(self, drivers: Drivers, pool: str, platform: str) -> None:
        self.drivers = drivers
        self.pool = pool
        self.platform = platform

    async def launch(self, tx: Transaction, msg: Incoming) -> None:
        command = LaunchSession.model_validate_json(msg.body)
        run = tables.Run(
            session_id=command.session_id,
            owner=command.owner,
            platform=self.platform,
            phase=Phase.WAITING,
            spec=command.model_dump(mode="json"),
            handle=None,
            cancel_reason=None,
            trace=current_trace_headers(),
        )
        await tables.insert(tx, run)
        # Only once committed: the driver reads the row, and a rolled-back launch must start nothing.
        tx.after_commit(lambda: self.drivers.ensure(command.session_id))

    async def stop(self, tx: Transaction, msg: Incoming) -> None:
        command = StopSession.model_validate_json(msg.body)
        run = await tables.get(tx, command.session_id)
        if run is None:
            # Never launched here: nothing runs, so the stop itself ends the session.
            await self._end_unlaunched(
                tx,
                command.session_id,
                command.owner,
                Phase.CANCELLED,
                MessageItem.info(
                    "urn:cancelled",
                    "Cancelled before launch: ${reason}",
                    time=tx.now,
                    reason=command.reason,
                ),
            )
            return
        await tables.request_cancel(tx, command.session_id, command.reason)
        # Once committed, so that the woken driver reads the cancel reason.
        tx.after_commit(lambda: self._wake(command.session_id))

    async def fail(self, tx: Transaction, msg: Incoming) -> None:
        """The scheduler could not make the booking: the session, never launched, ends FAILED."""
        command = FailSession.model_validate_json(msg.body)
        if await tables.get(tx, command.session_id) is not None:
            return  # launched after all (or ended already): its run reports its own end
        await self._end_unlaunched(tx, command.session_id, command.owner, Phase.FAILED, *command.messages)

    async def command_dead(self, tx: Transaction, msg: Incoming, reason: str) -> None:
        """A command that could never be processed: a session that has no run here ends FAILED with
        the reason, so its owner is not left waiting (one that runs reports its own end)."""
        try:
            body = json.loads(msg.body)
            session_id, owner = body["session_id"], body["owner"]
        except (ValueError, KeyError, TypeError):
            return  # no session named: the dead letter is the record
        if not isinstance(session_id, str) or not isinstance(owner, str):
            return
        if await tables.get(tx, session_id) is not None:
            return
        why = MessageItem.error(
            "urn:internal-error",
            "The broker could not run this session: ${reason}",
            time=tx.now,
            reason=reason,
        )
        await self._end_unlaunched(tx, session_id, owner, Phase.FAILED, why)

    async def _end_unlaunched(
        self, tx: Transaction, session_id: str, owner: str, phase: Phase, *messages: MessageItem
    ) -> None:
        """End a session that has no run here, recorded as a run that is over.

        The launcher knows a session by its run: with none, it is INITIAL as far as the launcher's
        table goes, and the lifecycle allows INITIAL to end CANCELLED or FAILED. The row makes a
        repeated command publish nothing and a launch that arrives after it start nothing.
        """
        trace = current_trace_headers()
        run = tables.Run(session_id, owner, self.platform, Phase.INITIAL, {}, None, None, trace)
        await tables.insert(tx, run)
        await publish_phase(tx, session_id, owner, run.phase, phase, trace, list(messages))
        await tables.set_phase(tx, session_id, phase)

    def _wake(self, session_id: str) -> None:
        self.drivers.wake(session_id)
        self.drivers.ensure(session_id)


# -- wiring -----------------------------------------------------------------------------------------

SERVICE = "launcher"


def wiring(pools: Sequence[LauncherHandlers]) -> Wiring:
    """Everything the launcher hears and says: one consumer of launch commands per pool."""
    return Wiring(
        SERVICE,
        consumers=tuple(
            Consumer(
                f"launcher-{handlers.pool}",
                (
                    Route(
                        subjects.LAUNCHER_COMMAND,
                        handlers.launch,
                        LaunchSession,
                        {"pool": handlers.pool, "verb": LauncherVerb.LAUNCH.value},
                    ),
                    Route(
                        subjects.LAUNCHER_COMMAND,
                        handlers.stop,
                        StopSession,
                        {"pool": handlers.pool, "verb": LauncherVerb.STOP.value},
                    ),
                    Route(
                        subjects.LAUNCHER_COMMAND,
                        handlers.fail,
                        FailSession,
                        {"pool": handlers.pool, "verb": LauncherVerb.FAIL.value},
                    ),
                ),
                on_dead=handlers.command_dead,
            )
            for handlers in pools
        ),
        on_refused=_phase_refused,
        publishes=(
            *(
                Publication(subjects.SESSION, SessionEvent, {"phase": phase.value})
                for phase in LAUNCHER_PHASES
            ),
            *(
                Publication(
                    subjects.LAUNCHER_EVENT,
                    PreparationMeasured,
                    {"pool": handlers.pool, "fact": LauncherFact.MEASURED.value},
                )
                for handlers in pools
            ),
            Publication(subjects.DEAD_LETTER, DeadLetter, {"service": SERVICE}),
            *upkeep.publications(SERVICE),
        ),
    )


#: The phases the launcher owns (docs/architecture.md): from preparation to the end of a launched
#: session, and the end of one cancelled or failed before launch.
LAUNCHER_PHASES = (
    Phase.PREPARING,
    Phase.AVAILABLE,
    Phase.RUNNING,
    Phase.RELEASING,
    Phase.COMPLETED,
    Phase.FAILED,
    Phase.CANCELLED,
)


async def _phase_refused(tx: Transaction, row: OutboxRow, reason: str) -> None:
    """A phase event the bus refused (a failure's long output) goes again without its bulk."""
    await resend_smaller(tx, row.subject, row.payload, row.headers)
