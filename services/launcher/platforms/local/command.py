"""`LocalCommand` executables on the local platform: checking, starting and reading back one run.

The command runs under a few lines of `/bin/sh` (`WRAPPER_SCRIPT`) that are the leader of the run's
process group: the shell starts the command in the same group, waits for it and writes `result.json`
(`{"state", "exit_status"}`) when it ends, so a restarted launcher finds the outcome in the work dir.
From then on a command run is observed, cancelled and released exactly like a notebook run (see
`local.py`): by the pid and start time in the handle, the group in /proc and the files in the work dir.

Why a shell and not a Python wrapper: a session whose work takes no time at all is dominated by the
cost of starting its wrapper. A Python wrapper cost ~50 ms of CPU per session here (the interpreter
starting); `sh`, its fork and the command cost ~1.3 ms, which is what lets the launcher run hundreds
of short sessions per second on two cores.

What the shell wrapper does not do like `subprocess`: like every asynchronous command of a
non-interactive shell, the command starts with SIGINT and SIGQUIT ignored (it has no terminal; a
cancel uses SIGTERM, then SIGKILL). A wait status can only be seen as the shell's `$?`, so an exit
code above 128 is reported as death by signal `code - 128`, the shell convention.

The result is written with one `write` by the shell (no `rename`: that would cost one more process
per session). A reader therefore treats a `result.json` it cannot parse as "not written yet" while the
wrapper lives, and as unreadable once the run's process group is gone (`local.py`).

Trust: the command is arbitrary user code running as the broker's user, as a local notebook is. It
gets a clean environment, the booking's limits and, where bwrap works, a sandbox (`containment`).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterable, Mapping
from functools import cache, partial
from pathlib import Path
from typing import Any

from services.launcher.platforms.files import read_json_object, write_json_atomically
from services.launcher.platforms.local.containment import (
    LIMITS_FILE,
    TMP_DIR,
    Limits,
    apply_limits,
    find_prlimit,
    memory_exceeded,
    prlimit_prefix,
    run_environment,
)
from services.launcher.platforms.local.runner import CANCEL_MARKER, CANCELLED_MESSAGE
from shared.platforms.port import LaunchSpec, PlatformError, RunState, RunStatus

# File names inside the work dir, shared with the plugin (local.py).
RESULT_FILE = "result.json"
COMMAND_LOG_FILE = "command.log"
TERM_MARKER = "term.forwarded"
LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 2000

SHELL = "/bin/sh"
# Run as `sh -c WRAPPER_SCRIPT eb-local-command PROGRAM [ARG...]` in the work dir, in a new session
# (its own process group), stdout and stderr appended to command.log.
#
# - The trap forwards a SIGTERM sent to the wrapper alone to the whole group (the command and what it
#   spawned), then ignores further ones; it is set before the command starts, so a SIGTERM can never
#   leave the command running without the wrapper.
# - `( exec "$@" ) &` forks and executes the program itself (never a shell builtin or function of the
#   same name), keeping the user's argv[0]; it stays in the wrapper's group, so a SIGKILL of the group
#   cannot orphan it.
# - A SIGTERM that reaches the forked shell before it has dropped the inherited trap is swallowed
#   (the shell only notes it). The trap therefore leaves TERM_MARKER before it signals the group,
#   and the forked shell looks for it once its trap is gone: a command is never started after the
#   wrapper forwarded a SIGTERM.
# - A trapped signal makes `wait` return early (with a status above 128): then a second `wait` waits
#   for the command to really end. If the signal came just after the command had been collected,
#   a POSIX shell may have forgotten it (127, "not a child"): the first status stands.
# - `$#` is 0 when the plugin has already written the result (a command that cannot be executed).
WRAPPER_SCRIPT = f"""\
[ "$#" -gt 0 ] || exit 0
forwarded=
trap 'forwarded=1; trap "" TERM; : > {TERM_MARKER}; kill -TERM 0' TERM
( [ -e {TERM_MARKER} ] && exit 143; exec "$@" ) &
child=$!
wait "$child"
status=$?
if [ -n "$forwarded" ]; then
  wait "$child" 2>/dev/null
  again=$?
  [ "$again" -eq 127 ] || status=$again
fi
if [ -e {CANCEL_MARKER} ]; then state=CANCELLED
elif [ "$status" -eq 0 ]; then state=SUCCEEDED
else state=FAILED
fi
printf '{{"state": "%s", "exit_status": %d}}\\n' "$state" "$status" > {RESULT_FILE}
"""
WRAPPER_NAME = "eb-local-command"


def command_argv(spec: LaunchSpec) -> list[str]:
    command = spec.executable.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) for part in command)
        or not command[0]
    ):
        raise PlatformError("a LocalCommand executable needs a command: a non-empty list of strings")
    if any("\0" in part for part in command):
        raise PlatformError("a LocalCommand argument contains a NUL character")
    return list(command)


def _checked_environment(variables: Mapping[Any, Any], where: str) -> dict[str, str]:
    for name, value in variables.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise PlatformError(f"{where} must map strings to strings")
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise PlatformError(f"{where} has an invalid variable name or value: {name!r}")
    return {str(name): str(value) for name, value in variables.items()}


def _own_environment(spec: LaunchSpec) -> dict[str, str]:
    """The launcher's and the user's variables, checked."""
    user = spec.executable.get("environment")
    if user is not None and not isinstance(user, dict):
        raise PlatformError("the LocalCommand environment must map strings to strings")
    return _checked_environment(spec.environment, "the launch environment") | _checked_environment(
        user or {}, "the LocalCommand environment"
    )


def command_environment(spec: LaunchSpec, thread_variables: Iterable[str]) -> dict[str, str]:
    """The allow-list of os.environ and the run's places, the booking's thread limits, then the
    launcher's and the user's variables (`containment.run_environment`).

    The limits come before the user's own variables so that a user can still lower (or raise) them,
    as for notebooks.
    """
    return run_environment(os.environ, spec.work_dir, thread_variables, spec.cores, _own_environment(spec))


async def prepare_command(spec: LaunchSpec) -> None:
    """Nothing to stage: check the executable so that a bad one fails before start."""
    command_argv(spec)
    _own_environment(spec)
    if not spec.work_dir.is_dir():  # the launcher has made it already; a stat is cheaper than a thread
        spec.work_dir.mkdir(parents=True, exist_ok=True)


def exec_error(program: str, env: Mapping[str, str], cwd: Path) -> str | None:
    """Why ``program`` cannot be executed, or None; the same search as `subprocess` and `execvp`.

    A name without a slash is looked up in the command's own PATH, a path is taken relative to the
    work dir. A file found but not executable only counts if no later PATH entry has an executable
    one, as for execvp (EACCES is remembered, ENOENT skipped).
    """
    if "/" in program:
        candidates = [os.path.join(cwd, program)]
    else:
        path = env.get("PATH", os.defpath).split(os.pathsep)
        candidates = [os.path.join(cwd, directory, program) for directory in path]
    denied = False
    for candidate in candidates:
        try:
            info = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode) and os.access(candidate, os.X_OK):
            return None
        denied = True
    if denied:
        return f"command not executable: {program} (permission denied)"
    return f"command not found: {program}"


async def start_command(
    spec: LaunchSpec, thread_variables: Iterable[str], limits: Limits, sandbox: list[str]
) -> subprocess.Popen[bytes]:
    """Start the wrapper; ``sandbox`` is the bwrap prefix of the command (empty: no sandbox)."""
    work_dir = spec.work_dir
    argv = command_argv(spec)
    env = command_environment(spec, thread_variables)
    if not work_dir.is_dir():
        raise PlatformError("the command was not prepared before start (no work dir)")
    # A retried start must not be confused by the files of an earlier attempt.
    for stale in (RESULT_FILE, CANCEL_MARKER, TERM_MARKER):
        (work_dir / stale).unlink(missing_ok=True)
    log_path = work_dir / COMMAND_LOG_FILE
    error = exec_error(argv[0], env, work_dir)
    if error is not None:
        # Known before anything runs: recorded here, and the wrapper (given no command) just exits.
        with log_path.open("a") as log:
            print(error, file=log)
        write_json_atomically(work_dir / RESULT_FILE, {"state": RunState.FAILED.value, "message": error})
        argv = []
    wrapper = [SHELL, "-c", WRAPPER_SCRIPT, WRAPPER_NAME, *(sandbox + argv if argv else [])]
    return await spawn_detached(wrapper, work_dir, env, log_path, limits)


async def spawn_detached(
    argv: list[str], work_dir: Path, env: dict[str, str], log_path: Path, limits: Limits
) -> subprocess.Popen[bytes]:
    """Start a run's process with its output appended to ``log_path``, under ``limits``.

    In a worker thread: Popen costs the launcher little CPU, but it waits until the child has
    executed its program, and under load that wait is better spent running the event loop. The
    limits are set before the run's own program starts: by `prlimit` (util-linux), which then
    executes it in the same process, or where there is none by a `preexec_fn` (it only calls
    `setrlimit`, so the fork-in-a-threaded-process caveat does not bite). They are recorded in the
    work dir so that the run's end can be explained.
    """
    prlimit = _prlimit()
    if prlimit is not None:
        argv = prlimit_prefix(prlimit, limits) + argv
    limit_self = None if prlimit is not None else partial(apply_limits, limits)
    (work_dir / TMP_DIR).mkdir(mode=0o700, exist_ok=True)
    # Plain write: a lost record only makes a memory failure's message less specific.
    (work_dir / LIMITS_FILE).write_text(json.dumps({"memory_bytes": limits.memory_bytes}))
    with log_path.open("ab") as log:
        # Its own session: cancel signals the whole group, and a launcher crash leaves it running.
        return await asyncio.to_thread(
            subprocess.Popen,
            argv,
            cwd=work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit_self,
        )


@cache
def _prlimit() -> str | None:
    return find_prlimit()


# -- reading the result back ------------------------------------------------------------------------


def command_status(result: Mapping[str, Any], work_dir: Path, outputs: dict[str, str]) -> RunStatus | None:
    """The status a wrapper's ``{"state", "exit_status"}`` record stands for; None if it is not one."""
    state = result.get("state")
    code = result.get("exit_status")
    if not isinstance(code, int) or state not in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
        return None
    if state == RunState.CANCELLED:
        message = CANCELLED_MESSAGE
    elif state == RunState.SUCCEEDED:
        message = exit_message(code)
    else:
        tail = log_tail(work_dir / COMMAND_LOG_FILE)
        message = f"{exit_message(code)}\n{tail}" if tail else exit_message(code)
        limit = memory_limit_hit(work_dir, tail, _signal_name(code))
        if limit is not None:
            message = f"the command exceeded its memory limit of {limit}: {message}"
    return RunStatus(state=RunState(state), message=message, outputs=outputs)


def memory_limit_hit(work_dir: Path, tail: str, killed_by: str | None) -> str | None:
    """The memory limit a failed run had, as "N GiB", when its end looks like hitting it; else None."""
    limits = read_json_object(work_dir / LIMITS_FILE)
    memory = limits.get("memory_bytes") if limits is not None else None
    if not isinstance(memory, int) or not memory_exceeded(tail, killed_by):
        return None
    return f"{memory / 2**30:g} GiB"


def _signal_name(status: int) -> str | None:
    if status <= 128:
        return None
    try:
        return signal.Signals(status - 128).name
    except ValueError:
        return None


def exit_message(status: int) -> str:
    """The shell's ``$?``: above 128 it means killed by signal ``status - 128``."""
    if status > 128:
        try:
            name = signal.Signals(status - 128).name
        except ValueError:
            return f"exit code {status}"
        return f"exit code {128 - status} (killed by {name})"
    return f"exit code {status}"


def log_tail(path: Path) -> str:
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4 * LOG_TAIL_CHARS))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])[-LOG_TAIL_CHARS:]
