"""The promise while the active scheduler and launcher are SIGKILLed (``broker faults --kill-active``):
the services keep their state in PostgreSQL (the run's private server, tests/postgres.py), each of
the two runs as an active process and a standby (`shared.bus.lease`); every kill is of an active
one, its standby takes over and the killed process comes back as the standby. Every request
answered once, every session in one terminal phase, every event stored once (`shared.ops.faults`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.faults import FaultReport, run_faults
from shared.ops.takeover import DatabaseNotEmpty
from tests.faults.audit import check_report, seed

pytestmark = pytest.mark.faults

#: "Within seconds" (docs/deployment.md gives the measured figures), with room for a loaded machine.
TAKEOVER_WITHIN_S = 30.0


async def _run(tmp_path: Path, database_url: str, sessions: int, kills: int, cluster: int = 1) -> FaultReport:
    report = await run_faults(
        tmp_path / "broker",
        sessions=sessions,
        kills=kills,
        seed=seed(),
        cluster=cluster,
        kill_active=True,
        database_url=database_url,
    )
    for line in report.kill_log:
        print(line)
    print(report.summary())
    check_report(report.summary(), sessions)
    assert report.active_kills == kills
    assert sum("SIGKILL active" in line for line in report.kill_log) == kills
    # Every standby took over (it answered its health subject: it consumes) within seconds.
    assert len(report.takeover_s) == kills
    assert all(s is not None and 0 < s < TAKEOVER_WITHIN_S for s in report.takeover_s), report.takeover_s
    # A message it applied came after the kill (there may have been none: the flow was over).
    assert all(s is None or s > 0 for s in report.first_message_s), report.first_message_s
    return report


async def test_sessions_survive_the_active_scheduler_and_launcher_killed(
    tmp_path: Path, postgres_url: str
) -> None:
    # The kills come in the first 5 s: some work may still be in flight (in the full-size run it is).
    report = await _run(tmp_path, postgres_url, sessions=100, kills=2)
    assert {line.split()[3] for line in report.kill_log if "SIGKILL active" in line} <= {
        "scheduler",
        "scheduler-2",
        "launcher",
        "launcher-2",
    }


async def test_kill_active_needs_postgres_and_an_empty_database(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(ValueError, match="EB_DATABASE_URL to an empty PostgreSQL database"):
        await run_faults(tmp_path / "a", sessions=1, kills=1, kill_active=True)
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE SCHEMA scheduler")
    with pytest.raises(DatabaseNotEmpty, match="already holds the schemas scheduler"):
        await run_faults(tmp_path / "b", sessions=1, kills=1, kill_active=True, database_url=postgres_url)


@pytest.mark.full_size
async def test_three_hundred_sessions_survive_the_actives_killed_on_a_cluster(
    tmp_path: Path, postgres_url: str
) -> None:
    await _run(tmp_path, postgres_url, sessions=300, kills=3, cluster=3)
