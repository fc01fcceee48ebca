"""The pure parts of the `jbo` platform: the verdict from eMCP's log, the step selection, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.launcher.platforms.jbo.job import (
    CALIBRATION_STEPS,
    judge,
    parse_command,
    read_log,
    select_steps,
)
from shared.http.retry import retry_after_seconds
from shared.platforms.port import PlatformError, RunState
from tests.fakes import jbo_runner

JOB = {"observation_id": "TS8004_C_001_20190801", "steps": list(CALIBRATION_STEPS), "skip_steps": []}
DONE = ["weblog/index.html", "weblog/info/eMCP_info.txt", "TS8004_C_001_20190801_avg.ms"]
GOOD_LOG = "".join(f"Start {s}\nEnd {s}\n" for s in CALIBRATION_STEPS) + "Pipeline finished\n"
BAD_LOG = "Start restore_flags\nEnd restore_flags\nStart bandpass\nSomething went wrong. Producing weblog\n"


def test_the_fake_and_the_plugin_agree_on_the_steps() -> None:
    assert tuple(jbo_runner.CALIBRATION) == CALIBRATION_STEPS


def test_success_needs_the_finish_line_and_the_artefacts() -> None:
    assert judge("SUCCEEDED", 0, None, GOOD_LOG, DONE, JOB)[0] == RunState.SUCCEEDED
    state, message = judge("SUCCEEDED", 0, None, GOOD_LOG, DONE[:1], JOB)
    assert state == RunState.FAILED and "weblog/info/eMCP_info.txt" in message


def test_exit_0_with_a_failed_step_is_a_failure_naming_the_step() -> None:
    state, message = judge("SUCCEEDED", 0, None, BAD_LOG, DONE, JOB)
    assert state == RunState.FAILED
    assert "at step bandpass" in message and "exit code 0" in message


def test_a_log_that_just_stops_is_a_failure() -> None:
    state, message = judge("SUCCEEDED", 0, None, "Start restore_flags\n", DONE, JOB)
    assert state == RunState.FAILED and "never says 'Pipeline finished'" in message


def test_runner_failure_and_cancel() -> None:
    state, message = judge("FAILED", 137, "oom", BAD_LOG, [], JOB)
    assert state == RunState.FAILED and "oom" in message and "137" in message and "bandpass" in message
    assert judge("CANCELLED", None, None, "", [], JOB)[0] == RunState.CANCELLED


def test_read_log_finds_the_step_in_progress() -> None:
    progress = read_log(BAD_LOG)
    assert progress.failing_step == "bandpass" and progress.went_wrong and not progress.finished


@pytest.mark.parametrize(
    ("command", "kind", "mode", "first", "skip"),
    [
        (None, "ms", "calibration", "restore_flags", ()),
        (None, "fitsidi", "full", "run_importfits", ()),
        (
            ["casa", "-c", "eMERLIN_CASA_pipeline.py", "-r", "calibration"],
            "ms",
            "calibration",
            "restore_flags",
            (),
        ),
        (["-r", "bandpass,fluxscale", "-s", "fluxscale"], "ms", "custom", "bandpass", ("fluxscale",)),
    ],
)
def test_step_selection(
    command: list[str] | None, kind: str, mode: str, first: str, skip: tuple[str, ...]
) -> None:
    selection = select_steps(*parse_command(command), kind)
    assert (selection.mode, selection.steps[0], selection.skip_steps) == (mode, first, skip)


@pytest.mark.parametrize("command", [["-r"], ["-x"], ["-r", "calibration", "-s", "calibration"]])
def test_bad_commands_are_refused(command: list[str]) -> None:
    with pytest.raises(PlatformError):
        select_steps(*parse_command(command), "ms")


def test_retry_after_seconds_and_dates() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("Wed, 01 Jan 2025 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
