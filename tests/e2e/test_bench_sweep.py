"""`broker bench --sweep ... --plot` as a user runs it: one offers run per concurrency, each on a fresh
embedded broker, a JSON list of the reports, and the PNG. Small on purpose (issue 7's real sweep is
in docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.helpers import json_documents, run_cli


def test_sweep_reports_each_concurrency_and_draws_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "sweep.png"
    result = run_cli(
        "bench", "--scenario", "offers", "--requests", "30", "--sweep", "5,10", "--plot", str(plot), "--json",
        timeout=120, TMPDIR=str(tmp_path),
    )
    assert result.returncode == 0, f"bench failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    [reports] = json_documents(result.stdout)
    assert [report["concurrency"] for report in reports] == [5, 10]
    for report in reports:
        assert report["answered"] == 30 and report["lost"] == 0, report
        assert report["per_s"] > 0 and report["latency_ms"]["p99"] > 0, report
        # Every offer (one per request) is still OFFERED when memory is read.
        assert report["live_sessions"] == 30, report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
