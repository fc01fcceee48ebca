"""`broker faults --cut-site`: a site's leaf link cut while sessions flow (`shared.ops.faults_site`).

Every request is answered once: sessions at the site run to their end, their events reaching the
hub after the link is back, and requests made while it is cut get NO after the quote deadline.
Nothing is lost, stored twice or left stuck, with services of the hub and the site killed too."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.faults import FaultReport
from shared.ops.faults_site import QUOTE_TIMEOUT_S, run_cut_site
from tests.faults.audit import seed

pytestmark = pytest.mark.faults


async def _run(tmp_path: Path, sessions: int, kills: int, cut_s: float) -> FaultReport:
    report = await run_cut_site(tmp_path / "federation", sessions, kills, cut_s=cut_s, seed=seed())
    for line in report.kill_log:
        print(line)
    summary = report.summary()
    print(summary)
    assert report.answered == sessions and report.lost == 0, summary
    assert report.duplicated == 0 and report.stuck == 0 and report.failed == 0, summary
    assert report.problems == [], summary
    # Requests made during the cut were answered NO, the others ran to COMPLETED.
    assert report.refused > 0 and report.completed + report.refused == sessions, summary
    assert any("cut the site's leaf link" in line for line in report.kill_log)
    assert any("mended the link" in line for line in report.kill_log)
    assert sum("SIGKILL" in line for line in report.kill_log) == kills
    # Nobody waited much longer than the quote deadline for an answer, even while the link was cut.
    assert report.longest_wait_s < QUOTE_TIMEOUT_S + 10, summary
    return report


async def test_sessions_survive_a_site_cut_off_for_a_while(tmp_path: Path) -> None:
    await _run(tmp_path, sessions=60, kills=1, cut_s=8.0)


@pytest.mark.full_size
async def test_three_hundred_sessions_survive_a_site_cut_off_for_thirty_seconds(tmp_path: Path) -> None:
    await _run(tmp_path, sessions=300, kills=3, cut_s=30.0)
