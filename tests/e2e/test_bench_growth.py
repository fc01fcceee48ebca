"""`broker bench` on the grown-up topologies: a 3-node JetStream cluster, and PostgreSQL for the
services' state. Small runs: the figures in docs/performance.md come from the full-size commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.bench import run_bench

pytestmark = pytest.mark.e2e


async def test_the_bench_runs_on_a_three_node_cluster(tmp_path: Path) -> None:
    report = await run_bench(tmp_path, "offers", 200, 50, baseline=False, cluster=3)
    assert (report.nats_nodes, report.store) == (3, "sqlite")
    assert report.answered == 200 and report.lost == 0 and report.overbooked == 0
    # The CPU of every node is measured, so the cost per request of replication shows.
    nodes = {name for name in report.cpu_ms_per_request if name.startswith("nats-server-")}
    assert nodes == {"nats-server-1", "nats-server-2", "nats-server-3"}


async def test_the_bench_runs_with_the_services_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    report = await run_bench(tmp_path, "lifecycle", 30, 10, baseline=False, database_url=postgres_url)
    assert (report.nats_nodes, report.store) == (1, "postgresql")
    assert report.answered == 30 and report.lost == 0 and report.overbooked == 0
    assert "COMPLETED" in report.phases_ms, report.phases_ms
