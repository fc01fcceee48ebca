"""`LocalCommand` executables on the local platform: checking and starting one run.

The command runs under `local_command_runner`, a small standard-library wrapper that is the leader of
the run's process group and writes `result.json` when the command ends. From then on a command run is
observed, cancelled and released exactly like a notebook run (see `local.py`): by the pid and start
time in the handle, the group in /proc and the files in the work dir.

Trust: the command is arbitrary user code with the broker's privileges, as a local notebook is.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from services.launcher.platforms.base import LaunchSpec, PlatformError
from services.launcher.platforms.local_command_runner import CANCEL_MARKER, COMMAND_LOG_FILE, RESULT_FILE

COMMAND_RUNNER_MODULE = "services.launcher.platforms.local_command_runner"


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


def command_environment(spec: LaunchSpec, thread_variables: Iterable[str]) -> dict[str, str]:
    """os.environ, then the booking's thread limits, then the launcher's and the user's variables.

    The limits come before the user's own variables so that a user can still lower (or raise) them,
    as for notebooks.
    """
    user = spec.executable.get("environment")
    if user is not None and not isinstance(user, dict):
        raise PlatformError("the LocalCommand environment must map strings to strings")
    return (
        dict(os.environ)
        | dict.fromkeys(thread_variables, str(spec.cores))
        | _checked_environment(spec.environment, "the launch environment")
        | _checked_environment(user or {}, "the LocalCommand environment")
    )


async def prepare_command(spec: LaunchSpec) -> None:
    """Nothing to stage: check the executable so that a bad one fails before start."""
    command_argv(spec)
    command_environment(spec, ())
    await asyncio.to_thread(spec.work_dir.mkdir, parents=True, exist_ok=True)


async def start_command(spec: LaunchSpec, thread_variables: Iterable[str]) -> subprocess.Popen[bytes]:
    work_dir = spec.work_dir
    argv = command_argv(spec)
    env = command_environment(spec, thread_variables)
    if not work_dir.is_dir():
        raise PlatformError("the command was not prepared before start (no work dir)")
    # A retried start must not be confused by the files of an earlier attempt.
    for stale in (RESULT_FILE, CANCEL_MARKER):
        (work_dir / stale).unlink(missing_ok=True)
    # -I: neither the user's PYTHON* variables nor files in the work dir can break the wrapper.
    wrapper = [sys.executable, "-I", "-m", COMMAND_RUNNER_MODULE, "--", *argv]
    return await spawn_detached(wrapper, work_dir, env, work_dir / COMMAND_LOG_FILE)


async def spawn_detached(
    argv: list[str], work_dir: Path, env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a run's process with its output appended to ``log_path``."""
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
        )
