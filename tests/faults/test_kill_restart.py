"""The promise under crashes: every request answered once, every session in exactly one terminal
phase, every (session, phase) event stored once — while services and nats-server are SIGKILLed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.faults import SERVICES, run_faults
from tests.faults.audit import check_report
from tests.faults.audit import seed as faults_seed

pytestmark = pytest.mark.faults


async def test_three_hundred_sessions_survive_services_killed_at_random(tmp_path: Path) -> None:
    seed = faults_seed()
    report = await run_faults(tmp_path / "broker", sessions=300, kills=6, seed=seed)
    for line in report.kill_log:
        print(line)
    assert report.kills == 6
    # Each service was killed at least once.
    assert all(any(f"SIGKILL {name}" in line for line in report.kill_log) for name in SERVICES)
    check_report(report.summary(), 300)


async def test_sessions_survive_a_nats_server_restart_on_the_same_store(tmp_path: Path) -> None:
    seed = faults_seed()
    report = await run_faults(tmp_path / "broker", sessions=150, kills=3, restart_nats=True, seed=seed)
    for line in report.kill_log:
        print(line)
    assert report.nats_restarts == 1
    check_report(report.summary(), 150)


async def test_sessions_survive_services_killed_at_random_with_safe_durability(tmp_path: Path) -> None:
    """``EB_DURABILITY=safe`` (every write synced, and the outbox checked against the streams at
    each restart) keeps the same promise."""
    seed = faults_seed()
    report = await run_faults(tmp_path / "broker", sessions=150, kills=3, seed=seed, durability="safe")
    for line in report.kill_log:
        print(line)
    config = (tmp_path / "broker" / "bus" / "nats-server.json").read_text(encoding="utf-8")
    assert '"sync_interval": "always"' in config
    check_report(report.summary(), 150)
