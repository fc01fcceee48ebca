"""The foreground loop of `broker up` and `broker site`: restart what exits until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console


def supervise(
    dead: Callable[[], list[str]],
    restart: Callable[[str], None],
    stop: Callable[[], None],
    console: Console,
    err: Console,
) -> None:
    """Every half second, start again each process ``dead`` names (said on ``err``); on a signal,
    ``stop`` them all."""
    stopping = False

    def request_stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        while not stopping:
            for name in dead():
                err.print(f"[yellow]{name} exited; restarting it[/yellow]")
                restart(name)
            time.sleep(0.5)
    finally:
        console.print("stopping…")
        stop()
        console.print("stopped")
