"""What a local run may see and use: its environment, its resource limits and its sandbox.

User code on the local platform runs on the broker's own host, as the broker's user. What keeps it
from the broker:

- a clean environment: only `INHERITED_VARIABLES` of the launcher's own, HOME and TMPDIR in the
  run's work dir, the booking's thread limits, then the request's variables. No `EB_*`, `OTEL_*`,
  token or password of the broker's reaches a run;
- resource limits from the booking (`Limits`), set before the run's program starts (by `prlimit`,
  or `setrlimit` in the child where there is no `prlimit`). They are per process (rlimits are):
  memory is RLIMIT_DATA (every private writable mapping: heap and anonymous mmap), CPU time
  RLIMIT_CPU (the booked cores for the slot's length), open files RLIMIT_NOFILE. RLIMIT_NPROC counts
  every process of the broker's user, the broker's own included, so it only stops a fork bomb (a
  per-session count needs cgroups or a user of its own, neither of which a plain host gives us);
- where `bwrap` (bubblewrap) can make namespaces, a sandbox (`sandbox_prefix`): the whole filesystem
  read-only, the run's work dir writable, the broker's data dir and every other run's work dir
  replaced by empty folders, a pid namespace of its own (the broker's processes are not visible),
  the network shared. Without bwrap, a run can read whatever the broker's user can: the launcher logs
  a warning at start and docs/security.md says so.
"""

from __future__ import annotations

import logging
import math
import resource
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: The launcher's variables a run inherits: where programs are, and the language of messages.
INHERITED_VARIABLES = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LANGUAGE", "TZ")
#: A run's PATH when the launcher has none.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The run's temporary files: inside its work dir, so they go with it.
TMP_DIR = "tmp"
#: Written in the work dir at start: the limits the run was given, so its end can be explained.
LIMITS_FILE = "limits.json"


def run_environment(
    inherited: Mapping[str, str],
    work_dir: Path,
    thread_variables: Iterable[str],
    cores: int,
    own: Mapping[str, str],
) -> dict[str, str]:
    """The environment of a run: the allow-list of ``inherited``, the run's places, the booking's
    thread limits, then ``own`` (the launcher's and the user's variables, which may override)."""
    env = {name: inherited[name] for name in INHERITED_VARIABLES if name in inherited}
    env.setdefault("PATH", DEFAULT_PATH)
    env["HOME"] = str(work_dir)
    env["TMPDIR"] = str(work_dir / TMP_DIR)
    env |= dict.fromkeys(thread_variables, str(cores))
    return env | dict(own)


@dataclass(frozen=True)
class Limits:
    """Per-process limits of a run's processes (see the module docstring for what they cover)."""

    memory_bytes: int
    cpu_seconds: int
    open_files: int
    processes: int

    def describe_memory(self) -> str:
        gib = self.memory_bytes / 2**30
        return f"{gib:g} GiB"


def limits_for(
    cores: int, memory_gib: int, slot_seconds: float, *, open_files: int, processes: int
) -> Limits:
    """The limits a booking gives: its memory, its cores for the rest of its slot (at least a second)."""
    return Limits(
        memory_bytes=memory_gib * 2**30,
        cpu_seconds=max(1, math.ceil(cores * max(slot_seconds, 0.0))),
        open_files=open_files,
        processes=processes,
    )


def _capped(soft: int, hard: int, kind: int) -> tuple[int, int]:
    """(soft, hard), never above the current hard limit (only a privileged process may raise it)."""
    _, current = resource.getrlimit(kind)
    if current == resource.RLIM_INFINITY:
        return soft, hard
    return min(soft, current), min(hard, current)


def limit_values(limits: Limits) -> list[tuple[str, int, int, int]]:
    """(prlimit option, resource, soft, hard) of each limit, capped at this process's hard limits
    (which a child inherits). The CPU soft limit sends SIGXCPU; the hard one, 5 s later, SIGKILL."""
    wanted = [
        ("data", resource.RLIMIT_DATA, limits.memory_bytes, limits.memory_bytes),
        ("cpu", resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 5),
        ("nofile", resource.RLIMIT_NOFILE, limits.open_files, limits.open_files),
        ("nproc", resource.RLIMIT_NPROC, limits.processes, limits.processes),
        ("core", resource.RLIMIT_CORE, 0, 0),  # a core dump would write the run's memory out
    ]
    return [(name, kind, *_capped(soft, hard, kind)) for name, kind, soft, hard in wanted]


def apply_limits(limits: Limits) -> None:
    """Set the limits of the calling process (in a child between fork and exec, where there is no
    `prlimit` program to do it)."""
    for _, kind, soft, hard in limit_values(limits):
        resource.setrlimit(kind, (soft, hard))


def prlimit_prefix(prlimit: str, limits: Limits) -> list[str]:
    """The arguments that run a program under ``limits`` with util-linux's `prlimit`.

    Preferred to `apply_limits` in a `preexec_fn`: that makes Popen fork the launcher instead of
    using vfork, which costs the launcher about 3 ms of CPU per run; `prlimit` costs the run ~2 ms.
    """
    return [prlimit, *(f"--{name}={soft}:{hard}" for name, _, soft, hard in limit_values(limits)), "--"]


def find_prlimit() -> str | None:
    return shutil.which("prlimit")


# How a process that hit RLIMIT_DATA usually dies: an allocation fails, and the program reports it.
_OUT_OF_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def memory_exceeded(log_tail: str, killed_by: str | None) -> bool:
    """Whether a failed run's end looks like its memory limit: an allocation error in its output, or
    death by a signal programs get when an allocation fails unchecked (SIGSEGV, SIGABRT, SIGBUS)."""
    return any(sign in log_tail for sign in _OUT_OF_MEMORY_SIGNS) or killed_by in (
        "SIGSEGV",
        "SIGABRT",
        "SIGBUS",
    )


# -- the sandbox ----------------------------------------------------------------------------------


def sandbox_prefix(bwrap: str, work_dir: Path, hidden: Sequence[Path]) -> list[str]:
    """The bwrap arguments that run a program in the sandbox (append the program's argv).

    Later mounts win, so the hidden folders (data dir, the work root) are emptied first and the
    run's own work dir is bound back inside them. No --die-with-parent on purpose: the run must
    survive a launcher restart (the launcher finds it again by its process group); the wrapper that
    starts bwrap is the run's leader, and a cancel signals that whole group.
    """
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # Only folders that exist: bwrap cannot make a mount point in the read-only root.
    for path in sorted({p.resolve() for p in hidden if p.is_dir()}, key=lambda p: len(p.parts)):
        argv += ["--tmpfs", str(path)]
    argv += ["--bind", str(work_dir), str(work_dir), "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    argv += ["--chdir", str(work_dir), "--"]
    return argv


def usable_bwrap() -> str | None:
    """The bwrap program if it is installed and can make its namespaces here, else None (logged)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        log.warning(
            "local platform: bwrap (Debian: bubblewrap) is not installed: local runs are not "
            "sandboxed and can read every file the broker's user can (see docs/security.md)"
        )
        return None
    try:
        probe = subprocess.run(
            [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--unshare-pid", "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = str(exc)
    else:
        if probe.returncode == 0:
            return bwrap
        reason = probe.stderr.decode(errors="replace").strip()[:300] or f"exit code {probe.returncode}"
    log.warning("local platform: bwrap cannot make a sandbox here (%s): local runs are not sandboxed", reason)
    return None
