"""`broker bench --plot` and `--profile` without the `bench` extra: one line naming the extra, before
any broker starts (a sweep runs for minutes; failing at the end of it would waste them)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.ops import bench_profile
from shared.ops.cli import app

HINT = "pip install 'execution-broker[bench]'"


def run_bench(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    # The bench's data directory would appear here: it must not, the command stops before it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = CliRunner().invoke(app, ["bench", *args])
    assert list((tmp_path / "tmp").iterdir()) == []
    return result.exit_code, result.stderr


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules is how Python spells "this package cannot be imported".
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, stderr = run_bench(["--sweep", "10,50", "--plot", str(tmp_path / "s.png")], tmp_path, monkeypatch)
    assert code == 2
    assert stderr.strip().splitlines() == [f"error: --plot needs matplotlib, from the bench extra: {HINT}"]


def test_profile_without_py_spy_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_profile, "py_spy_binary", lambda: None)
    code, stderr = run_bench(["--profile", str(tmp_path / "profile")], tmp_path, monkeypatch)
    assert code == 2
    assert stderr.strip().splitlines() == [f"error: --profile needs py-spy, from the bench extra: {HINT}"]
