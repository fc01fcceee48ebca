"""Pure decisions of the launcher: what a platform's report means for the session's phase."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.lifecycle import Phase
from shared.platforms.port import RunState, RunStatus


@dataclass(frozen=True)
class Ending:
    """How a run ends: the terminal phase and the reason shown to the user."""

    phase: Phase
    message: str | None
    needs_stop: bool


def judge(
    status: RunStatus | None, cancel_reason: str | None, slot_end: datetime, now: datetime
) -> Ending | None:
    """None while the run should go on; otherwise how to end it. Cancel wins over everything."""
    if cancel_reason is not None:
        return Ending(Phase.CANCELLED, f"Cancelled: {cancel_reason}", needs_stop=True)
    if status is not None and status.state is RunState.SUCCEEDED:
        return Ending(Phase.COMPLETED, status.message, needs_stop=False)
    if status is not None and status.state is RunState.FAILED:
        return Ending(Phase.FAILED, status.message or "the run failed", needs_stop=False)
    if status is not None and status.state is RunState.CANCELLED:
        return Ending(Phase.CANCELLED, status.message or "the platform cancelled the run", needs_stop=False)
    if now >= slot_end:
        return Ending(
            Phase.FAILED,
            f"Stopped at the end of its booked slot ({slot_end.isoformat()}): the run had not finished",
            needs_stop=True,
        )
    return None
