"""`broker bench --floor-transport`: which relays the floor of `--baseline` runs, checked before any
broker starts (a relay that cannot start would leave every request of a long run unanswered)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from shared.ops import cli
from shared.ops.bench_floor import FloorTransport

HINT = "pip install 'execution-broker[bench]'"


def run_bench(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    # The bench's data directory would appear here: it must not, the command stops before it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    result = CliRunner().invoke(cli.app, ["bench", *args])
    assert list((tmp_path / "tmp").iterdir()) == []
    return result.exit_code, result.stderr


def parsed_transport(args: list[str], monkeypatch: pytest.MonkeyPatch) -> FloorTransport:
    """The floor transport `broker bench args` hands to the run (which is replaced, so none starts)."""
    seen: list[FloorTransport] = []

    def record(*positional: Any) -> None:
        seen.extend(arg for arg in positional if isinstance(arg, FloorTransport))
        raise typer.Exit(0)

    monkeypatch.setattr(cli, "run_bench_command", record)
    result = CliRunner().invoke(cli.app, ["bench", *args])
    assert result.exit_code == 0, result.output
    [transport] = seen
    return transport


def test_the_floor_runs_nats_py_relays_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parsed_transport(["--baseline"], monkeypatch) is FloorTransport.NATS_PY


@pytest.mark.parametrize("transport", list(FloorTransport))
def test_each_transport_is_chosen_by_its_name(
    transport: FloorTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--baseline", "--floor-transport", transport.value]
    assert parsed_transport(args, monkeypatch) is transport


def test_an_unknown_transport_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, stderr = run_bench(["--baseline", "--floor-transport", "zmq"], tmp_path, monkeypatch)
    assert code == 2
    assert "--floor-transport" in stderr and "'zmq' is not one of" in stderr


def test_a_transport_without_the_baseline_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, stderr = run_bench(["--floor-transport", "faststream"], tmp_path, monkeypatch)
    assert code == 2
    assert stderr.strip().splitlines() == [
        "error: --floor-transport chooses the relays of the floor: add --baseline"
    ]


@pytest.mark.parametrize("transport", ["faststream", "faststream-patched"])
def test_faststream_relays_without_faststream_name_the_extra(
    transport: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules is how Python spells "this package cannot be imported".
    monkeypatch.setitem(sys.modules, "faststream", None)
    code, stderr = run_bench(["--baseline", "--floor-transport", transport], tmp_path, monkeypatch)
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"error: --floor-transport {transport} needs faststream, from the bench extra: {HINT}"
    ]


def test_a_relay_process_refuses_an_unknown_transport() -> None:
    from shared.ops import bench_floor

    with pytest.raises(ValueError, match="'zmq' is not a valid FloorTransport"):
        bench_floor.main(["nats://127.0.0.1:1", "0", "zmq"])
