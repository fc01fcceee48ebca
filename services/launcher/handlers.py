"""Thin handlers of the launcher: record launches and stops; the drivers do the slow work."""

from __future__ import annotations

from services.launcher import store as tables
from services.launcher.driver import Drivers
from shared.bus.events import publish_phase
from shared.bus.runtime import Incoming
from shared.bus.store import Transaction, current_trace_headers
from shared.lifecycle import Phase
from shared.messages import LaunchSession, StopSession
from shared.models import MessageItem


class LauncherHandlers:
    def __init__(self, drivers: Drivers, platform: str) -> None:
        self.drivers = drivers
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
            await publish_phase(
                tx,
                command.session_id,
                Phase.CANCELLED,
                current_trace_headers(),
                [
                    MessageItem.info(
                        "urn:cancelled",
                        "Cancelled before launch: ${reason}",
                        time=tx.now,
                        reason=command.reason,
                    )
                ],
            )
            return
        await tables.request_cancel(tx, command.session_id, command.reason)
        # Once committed, so that the woken driver reads the cancel reason.
        tx.after_commit(lambda: self._wake(command.session_id))

    def _wake(self, session_id: str) -> None:
        self.drivers.wake(session_id)
        self.drivers.ensure(session_id)
