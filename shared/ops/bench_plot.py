"""``broker bench --sweep ... --plot PATH.png``: throughput and p99 latency against concurrency.

matplotlib is imported inside ``draw`` so that every other ``broker`` command starts without it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BROKER_STYLE = {"color": "tab:blue", "marker": "o", "label": "broker"}
FLOOR_STYLE = {"color": "tab:gray", "marker": "s", "linestyle": "--", "label": "floor (plain nats-py chain)"}


@dataclass(frozen=True)
class SweepPoint:
    """One concurrency of a sweep; the floor figures are None without ``--baseline``."""

    concurrency: int
    per_s: float
    p99_ms: float
    floor_per_s: float | None = None
    floor_p99_ms: float | None = None
    ratio: float | None = None


def matplotlib_installed() -> bool:
    """Whether ``draw`` can run: matplotlib comes with the ``bench`` extra, not with the broker."""
    return importlib.util.find_spec("matplotlib") is not None


def draw(points: Sequence[SweepPoint], path: Path, title: str) -> None:
    """Two panels side by side: offer sets/s and p99 ms against concurrency, broker and floor."""
    # The Agg canvas directly, not pyplot: no global figure state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogFormatter, NullFormatter, ScalarFormatter

    ordered = sorted(points, key=lambda point: point.concurrency)
    concurrency = [point.concurrency for point in ordered]
    with_floor = [point for point in ordered if point.floor_per_s is not None]

    figure = Figure(figsize=(11, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    throughput, latency = figure.subplots(1, 2)
    throughput.plot(concurrency, [point.per_s for point in ordered], **BROKER_STYLE)
    latency.plot(concurrency, [point.p99_ms for point in ordered], **BROKER_STYLE)
    if with_floor:
        floor_concurrency = [point.concurrency for point in with_floor]
        throughput.plot(floor_concurrency, [point.floor_per_s or 0.0 for point in with_floor], **FLOOR_STYLE)
        latency.plot(floor_concurrency, [point.floor_p99_ms or 0.0 for point in with_floor], **FLOOR_STYLE)
    for point in ordered:
        if point.ratio is not None:
            # The figure the performance targets are stated in, next to the point it belongs to.
            throughput.annotate(
                f"{point.ratio:.2f} of floor",
                (point.concurrency, point.per_s),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=8,
                color="tab:blue",
            )

    throughput.set_ylabel("throughput (offer sets / s)")
    throughput.set_ylim(bottom=0)
    # Latencies of broker and floor differ by orders of magnitude: a log scale shows both.
    latency.set_yscale("log")
    # Plain numbers (30, 200, 5000), not powers of ten: readers compare them with the targets in ms.
    latency.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    latency.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    latency.set_ylabel("p99 latency, request → offer set (ms, log scale)")
    for axes in (throughput, latency):
        axes.set_xscale("log")
        # Label the measured concurrencies themselves, not powers of ten.
        axes.set_xticks(concurrency)
        # Room at both ends for the ratio labels centred on the first and last points.
        axes.margins(x=0.1)
        axes.xaxis.set_major_formatter(ScalarFormatter())
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("concurrency (requests in flight)")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
