"""The promise on a 3-node JetStream cluster while a stream leader's node is SIGKILLed: restarted on
its store (``--kill-nats-node``) or left down to the end (``--stop-nats-node``), with a service
killed as well. Every request answered once, every session in one terminal phase, every event
stored once (`shared.ops.faults`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.faults import FaultReport, NodeFault, run_faults
from tests.faults.audit import check_report, seed

pytestmark = pytest.mark.faults


async def _run(tmp_path: Path, fault: NodeFault, sessions: int, kills: int) -> FaultReport:
    report = await run_faults(
        tmp_path / "broker", sessions=sessions, kills=kills, seed=seed(), cluster=3, node_fault=fault
    )
    for line in report.kill_log:
        print(line)
    print(report.summary())
    check_report(report.summary(), sessions)
    assert report.nats_nodes_killed == 1
    assert any("SIGKILL nats node" in line for line in report.kill_log)
    return report


async def test_sessions_survive_a_cluster_node_killed_and_restarted(tmp_path: Path) -> None:
    report = await _run(tmp_path, NodeFault.KILL, sessions=30, kills=1)
    assert report.nats_restarts == 1
    assert 0 < report.longest_gap_s <= report.seconds


async def test_sessions_survive_a_cluster_node_that_stays_down(tmp_path: Path) -> None:
    report = await _run(tmp_path, NodeFault.STOP, sessions=30, kills=1)
    assert report.nats_restarts == 0
    assert 0 < report.longest_gap_s <= report.seconds


@pytest.mark.full_size
async def test_three_hundred_sessions_survive_a_cluster_node_killed_and_restarted(tmp_path: Path) -> None:
    report = await _run(tmp_path, NodeFault.KILL, sessions=300, kills=3)
    assert report.nats_restarts == 1


@pytest.mark.full_size
async def test_three_hundred_sessions_survive_a_cluster_node_that_stays_down(tmp_path: Path) -> None:
    report = await _run(tmp_path, NodeFault.STOP, sessions=300, kills=3)
    assert report.nats_restarts == 0
