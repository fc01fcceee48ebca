"""The promise under crashes: every request answered once, every session in exactly one terminal
phase, every (session, phase) event stored once — while services and nats-server are SIGKILLed."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from shared.ops.faults import SERVICES, run_faults

pytestmark = pytest.mark.faults


def _seed() -> int:
    # Random by default so repeated CI runs cover different kill moments; printed to reproduce.
    return int(os.environ.get("EB_FAULTS_SEED", random.randrange(1_000_000)))


def _check(report_dict: dict[str, object], sessions: int) -> None:
    assert report_dict["answered"] == sessions, report_dict
    assert report_dict["lost"] == 0, report_dict
    assert report_dict["duplicated"] == 0, report_dict
    assert report_dict["stuck"] == 0, report_dict
    assert report_dict["failed"] == 0, report_dict
    assert report_dict["completed"] == sessions, report_dict
    assert report_dict["problems"] == [], report_dict


async def test_three_hundred_sessions_survive_services_killed_at_random(tmp_path: Path) -> None:
    seed = _seed()
    print(f"EB_FAULTS_SEED={seed}")
    report = await run_faults(tmp_path / "broker", sessions=300, kills=6, seed=seed)
    for line in report.kill_log:
        print(line)
    assert report.kills == 6
    # Each service was killed at least once.
    assert all(any(f"SIGKILL {name}" in line for line in report.kill_log) for name in SERVICES)
    _check(report.summary(), 300)


async def test_sessions_survive_a_nats_server_restart_on_the_same_store(tmp_path: Path) -> None:
    seed = _seed()
    print(f"EB_FAULTS_SEED={seed}")
    report = await run_faults(tmp_path / "broker", sessions=150, kills=3, restart_nats=True, seed=seed)
    for line in report.kill_log:
        print(line)
    assert report.nats_restarts == 1
    _check(report.summary(), 150)


async def test_sessions_survive_services_killed_at_random_with_safe_durability(tmp_path: Path) -> None:
    """``EB_DURABILITY=safe`` (every write synced, and the outbox checked against the streams at
    each restart) keeps the same promise."""
    seed = _seed()
    print(f"EB_FAULTS_SEED={seed}")
    report = await run_faults(tmp_path / "broker", sessions=150, kills=3, seed=seed, durability="safe")
    for line in report.kill_log:
        print(line)
    config = (tmp_path / "broker" / "bus" / "nats-server.json").read_text(encoding="utf-8")
    assert '"sync_interval": "always"' in config
    _check(report.summary(), 150)
