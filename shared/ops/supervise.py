"""The foreground loop of `broker up` and `broker site`: restart what exits until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

#: How often the supervisor runs its upkeep (the rotation of log files).
UPKEEP_EVERY_S = 10.0


def supervise(
    dead: Callable[[], list[str]],
    restart: Callable[[str], None],
    stop: Callable[[], None],
    console: Console,
    err: Console,
    upkeep: Callable[[], None] | None = None,
) -> None:
    """Every half second, start again each process ``dead`` names (said on ``err``); every
    `UPKEEP_EVERY_S`, run ``upkeep``; on a signal, ``stop`` them all."""
    stopping = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    last_upkeep = time.monotonic()
    try:
        while not stopping:
            for name in dead():
                err.print(f"[yellow]{name} exited; restarting it[/yellow]")
                restart(name)
            if upkeep is not None and time.monotonic() - last_upkeep >= UPKEEP_EVERY_S:
                last_upkeep = time.monotonic()
                try:
                    upkeep()
                except OSError as exc:  # a full disk, say: say so, and go on supervising
                    err.print(f"[yellow]upkeep failed: {exc}[/yellow]")
            time.sleep(0.5)
    finally:
        console.print("stopping…")
        stop()
        console.print("stopped")
