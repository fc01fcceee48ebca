"""``broker bench --profile DIR``: py-spy profiles of the service processes while the load runs.

Per service, two recorders run side by side for the whole load: a ``raw`` one (collapsed stacks,
which ``summarise`` turns into the functions that take the time) and a ``flamegraph`` one (an SVG
for people). Only the raw one pauses the process for each sample; the flamegraph one is
``--nonblocking``, because two recorders that both pause the same process contend for ptrace and
drop samples. Both sample only while the GIL is held (``--gil``): for a CPU-bound asyncio service
that is where the time goes, and idle waits on the event loop would otherwise dominate.

py-spy writes its file when it gets SIGINT, so a recording runs until ``stop`` rather than for a
guessed ``--duration``.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

SAMPLING = ("--gil", "--rate", "200")
# py-spy prints this once it is attached and sampling; waiting for it keeps the start of the load
# inside the recording.
SAMPLING_STARTED = "Sampling process"
ATTACH_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 60.0


class FunctionShare(NamedTuple):
    function: str
    inclusive_pct: float
    self_pct: float


# The plotting and profiling tools are an extra: a broker in production needs neither.
BENCH_EXTRA = "pip install 'execution-broker[bench]'"


class ProfileError(RuntimeError):
    """py-spy is missing, could not attach, or wrote nothing."""


_LINE_NUMBER = re.compile(r":\d+\)$")


def function_of(frame: str) -> str:
    """``handle (services/offers/handlers.py:42)`` → ``handle (services/offers/handlers.py)``: samples
    taken at different lines of one function count for that function."""
    return _LINE_NUMBER.sub(")", frame)


def summarise(collapsed_lines: Iterable[str], top: int = 15) -> list[FunctionShare]:
    """Where the samples of a collapsed-stack profile (``frame;frame;...;leaf COUNT``) went.

    ``inclusive_pct``: share of samples with the function anywhere on the stack (once per stack, so
    recursion does not count twice); ``self_pct``: share with it as the innermost frame. Returns the
    ``top`` functions by inclusive share together with the ``top`` by self share, ordered by
    inclusive, then self share. Functions on every stack with no sample of their own (the trunk:
    ``<module>``, the CLI, ``asyncio.run``, ...) are left out: 100 % / 0 % says nothing.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed_lines:
        stack, _, count_text = line.strip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [function_of(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        count = int(count_text)
        total += count
        for function in set(frames):
            inclusive[function] += count
        own[frames[-1]] += count
    if total == 0:
        return []
    informative = Counter({name: n for name, n in inclusive.items() if n < total or own[name] > 0})
    chosen = {name for name, _ in informative.most_common(top)} | {name for name, _ in own.most_common(top)}
    ordered = sorted(chosen, key=lambda name: (-inclusive[name], -own[name], name))
    return [
        FunctionShare(name, round(100 * inclusive[name] / total, 1), round(100 * own[name] / total, 1))
        for name in ordered
    ]


def py_spy_binary() -> str | None:
    """The py-spy next to this interpreter (the virtualenv's), else one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    service: str
    raw: Path
    flamegraph: Path
    log: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@dataclass
class ServiceProfiler:
    """Records each given process from ``start`` to ``stop``; files go to ``out_dir`` as
    ``<label>-<service>.raw.txt``, ``.svg`` and ``.log`` (py-spy's own output)."""

    out_dir: Path
    label: str
    recordings: list[Recording] = field(default_factory=list)

    def start(self, pids: dict[str, int]) -> None:
        binary = py_spy_binary()
        if binary is None:
            raise ProfileError(f"py-spy not found ({BENCH_EXTRA})")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for service, pid in pids.items():
            stem = f"{self.label}-{service}"
            recording = Recording(
                service,
                raw=self.out_dir / f"{stem}.raw.txt",
                flamegraph=self.out_dir / f"{stem}.svg",
                log=self.out_dir / f"{stem}.log",
            )
            with recording.log.open("wb") as log:
                for output, extra in (
                    (recording.raw, ["--format", "raw"]),
                    (recording.flamegraph, ["--format", "flamegraph", "--nonblocking"]),
                ):
                    recording.procs.append(
                        subprocess.Popen(
                            [binary, "record", "--pid", str(pid), *SAMPLING, *extra, "--output", str(output)],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
            self.recordings.append(recording)
        self._wait_until_sampling()

    def _wait_until_sampling(self) -> None:
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        for recording in self.recordings:
            expected = len(recording.procs)
            while recording.log.read_text(errors="replace").count(SAMPLING_STARTED) < expected:
                codes = [proc.poll() for proc in recording.procs]
                if any(code is not None for code in codes):
                    raise ProfileError(
                        f"py-spy stopped on {recording.service} (exit codes {codes}): {self._tail(recording)}"
                    )
                if time.monotonic() > deadline:
                    raise ProfileError(f"py-spy did not start sampling {recording.service} in time")
                time.sleep(0.05)

    def stop(self) -> dict[str, list[FunctionShare]]:
        """SIGINT every recorder, wait for its files, and summarise each raw profile."""
        for recording in self.recordings:
            for proc in recording.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        failures: list[str] = []
        summaries: dict[str, list[FunctionShare]] = {}
        for recording in self.recordings:
            for proc in recording.procs:
                try:
                    proc.wait(WRITE_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if not recording.raw.is_file():
                failures.append(f"{recording.service}: no raw profile written: {self._tail(recording)}")
                continue
            with recording.raw.open(errors="replace") as lines:
                summaries[recording.service] = summarise(lines)
        if failures:
            raise ProfileError("; ".join(failures))
        return summaries

    def abort(self) -> None:
        """Kill recorders still running (the load failed); whatever they wrote stays."""
        for recording in self.recordings:
            for proc in recording.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)

    @staticmethod
    def _tail(recording: Recording) -> str:
        try:
            lines = recording.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line for line in lines[-3:] if line.strip()) or "(empty log)"
