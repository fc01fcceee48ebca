"""`broker bench --sweep --plot`: the drawing writes a real PNG of a useful size, from given points."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shared.ops.bench import parse_concurrencies
from shared.ops.bench_plot import SweepPoint, draw

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format requires to come first."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_SIGNATURE
    assert header[12:16] == b"IHDR"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.parametrize(
    "points",
    [
        # With the floor, as `--baseline` gives, spanning orders of magnitude of latency.
        [
            SweepPoint(10, 266.6, 52.8, 931.1, 23.4, 0.286),
            SweepPoint(50, 340.0, 200.3, 1394.9, 51.3, 0.244),
            SweepPoint(1000, 107.0, 13600.0, 2404.0, 612.0, 0.044),
        ],
        # Broker only, given out of order.
        [SweepPoint(50, 340.0, 200.3), SweepPoint(10, 266.6, 52.8)],
    ],
    ids=["with-floor", "broker-only"],
)
def test_draw_writes_a_png_at_least_600_by_300(tmp_path: Path, points: list[SweepPoint]) -> None:
    path = tmp_path / "plots" / "sweep.png"
    draw(points, path, "broker bench, offers — 2026-11-28, 2 cores")
    width, height = png_size(path)
    assert width >= 600 and height >= 300, (width, height)
    # Two panels side by side: wider than tall.
    assert width > height


def test_sweep_concurrencies_are_parsed_and_checked() -> None:
    assert parse_concurrencies("10,50,200,1000") == [10, 50, 200, 1000]
    assert parse_concurrencies(" 5, 10 ") == [5, 10]
    for bad in ("", "10,0", "10,10", "ten"):
        with pytest.raises(ValueError):
            parse_concurrencies(bad)
