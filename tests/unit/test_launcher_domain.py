"""The launcher's pure judgement of a platform report: go on, or end the run (and how)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.launcher.domain import Ending, judge
from shared.lifecycle import Phase
from shared.platforms.port import RunState, RunStatus

SLOT_END = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
BEFORE = SLOT_END - timedelta(minutes=5)
AFTER = SLOT_END + timedelta(seconds=1)


def status(state: RunState, message: str | None = None) -> RunStatus:
    return RunStatus(state=state, message=message)


@pytest.mark.parametrize("now", [BEFORE, SLOT_END, AFTER])
@pytest.mark.parametrize(
    "report",
    [
        None,
        status(RunState.RUNNING),
        status(RunState.SUCCEEDED, "done"),
        status(RunState.FAILED, "exit code 1"),
        status(RunState.CANCELLED, "killed by the platform"),
    ],
)
def test_a_cancel_wins_over_any_report(report: RunStatus | None, now: datetime) -> None:
    ending = judge(report, "owner asked", SLOT_END, now)
    assert ending is not None
    assert ending.phase is Phase.CANCELLED
    assert ending.needs_stop
    assert ending.message is not None and "owner asked" in ending.message


def test_succeeded_completes_without_a_stop() -> None:
    ending = judge(status(RunState.SUCCEEDED, "notebook executed"), None, SLOT_END, BEFORE)
    assert ending == Ending(Phase.COMPLETED, "notebook executed", needs_stop=False)


def test_succeeded_without_a_message_completes() -> None:
    ending = judge(status(RunState.SUCCEEDED), None, SLOT_END, BEFORE)
    assert ending is not None
    assert ending.phase is Phase.COMPLETED
    assert not ending.needs_stop


def test_a_success_reported_after_the_slot_end_still_completes() -> None:
    # The run finished; its report arrived late. It is not a slot overrun.
    ending = judge(status(RunState.SUCCEEDED, "done"), None, SLOT_END, AFTER)
    assert ending is not None
    assert ending.phase is Phase.COMPLETED
    assert not ending.needs_stop


@pytest.mark.parametrize("now", [BEFORE, AFTER])
def test_failed_keeps_the_platforms_message(now: datetime) -> None:
    ending = judge(status(RunState.FAILED, "cell 3 raised ZeroDivisionError"), None, SLOT_END, now)
    assert ending == Ending(Phase.FAILED, "cell 3 raised ZeroDivisionError", needs_stop=False)


def test_the_platform_cancelling_the_run_cancels_the_session() -> None:
    ending = judge(status(RunState.CANCELLED, "pre-empted by the batch system"), None, SLOT_END, BEFORE)
    assert ending == Ending(Phase.CANCELLED, "pre-empted by the batch system", needs_stop=False)


@pytest.mark.parametrize("report", [status(RunState.RUNNING), status(RunState.PREPARING), None])
@pytest.mark.parametrize("now", [SLOT_END, AFTER, SLOT_END + timedelta(hours=3)])
def test_a_run_still_going_at_its_slot_end_fails_and_is_stopped(
    report: RunStatus | None, now: datetime
) -> None:
    ending = judge(report, None, SLOT_END, now)
    assert ending is not None
    assert ending.phase is Phase.FAILED
    assert ending.needs_stop
    assert ending.message is not None
    assert "slot" in ending.message
    assert SLOT_END.isoformat() in ending.message


@pytest.mark.parametrize("report", [status(RunState.RUNNING), status(RunState.PREPARING), None])
@pytest.mark.parametrize("now", [BEFORE, SLOT_END - timedelta(microseconds=1)])
def test_a_run_still_going_before_its_slot_end_goes_on(report: RunStatus | None, now: datetime) -> None:
    assert judge(report, None, SLOT_END, now) is None
