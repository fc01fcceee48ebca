"""The `local` platform: runs a session's executable on this machine.

JupyterNotebook executables run in a child process (`local_runner`) in its own process group. The
handle holds the pid and the process start time, and every observation goes through /proc and the
files in the work dir, so a restarted launcher finds the run again with a fresh LocalPlatform.
LocalCommand executables (our extension kind) run the same way under a few lines of /bin/sh that
record the command's exit status (see `local_command`). While a run's leader process lives, a pidfd
on it tells the launcher the moment it exits (`exited`), so a finished run is seen at once without
polling fast.
DockerContainer executables run with the local container engine, when there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import nbformat

from services.launcher.platforms.files import read_json_object
from services.launcher.platforms.local import data as local_data
from services.launcher.platforms.local import runner as runner_module
from services.launcher.platforms.local.command import (
    COMMAND_LOG_FILE,
    command_status,
    memory_limit_hit,
    prepare_command,
    spawn_detached,
    start_command,
)
from services.launcher.platforms.local.command import (
    RESULT_FILE as RESULT_FILE,  # re-exported: the plugin's file names live here too
)
from services.launcher.platforms.local.containment import (
    Limits,
    limits_for,
    run_environment,
    sandbox_prefix,
    usable_bwrap,
)
from services.launcher.platforms.local.fetch import Fetcher
from services.launcher.platforms.local.locations import LocationRefused, LocationRules, local_path
from services.launcher.platforms.local.runner import (
    CANCEL_MARKER,
    CANCELLED_MESSAGE,
    KERNEL_FILE,
    proc_start_time,
    write_result,
)
from services.launcher.platforms.local.settings import LocalSettings
from shared.models import (
    DOCKER_CONTAINER_KIND,
    JUPYTER_NOTEBOOK_KIND,
    LOCAL_COMMAND_KIND,
    SIMPLE_DATA_KIND,
    NotebookMode,
)
from shared.platforms.port import (
    LaunchSpec,
    PlatformBase,
    PlatformError,
    RunState,
    RunStatus,
)

# Run by its file with `python -I`: the runner needs no PYTHONPATH (the run's environment has none
# of the launcher's), and isolated mode keeps the runner's own folder (with a `platform.py`) off
# sys.path.
RUNNER_SCRIPT = str(Path(runner_module.__file__).resolve())
INPUT_FILE = "input.ipynb"
OUTPUT_FILE = "output.ipynb"
LOG_FILE = "runner.log"
CONTAINER_LOG_FILE = "container.log"

# How long a run gets to stop after SIGTERM before SIGKILL, and after SIGKILL before we give up.
TERM_GRACE_SECONDS = 5.0
KILL_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 20

# Numeric libraries size their thread pools from the machine, not from the booking.
THREAD_LIMIT_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


class LocalPlatform(PlatformBase):
    name = "local"
    executable_kinds: ClassVar[frozenset[str]] = frozenset(
        {JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND, LOCAL_COMMAND_KIND}
    )
    # Staged by `local_data`: files and http(s) URLs; other data kinds are refused there.
    data_kinds: ClassVar[frozenset[str]] = frozenset({SIMPLE_DATA_KIND})
    # User code runs on the broker's host: only for the owners a pool allows (offers checks).
    runs_on_host: ClassVar[bool] = True

    def __init__(self, **settings: Any) -> None:
        # The registry passes every configured setting; unknown ones are ignored on purpose.
        self.settings = LocalSettings.from_keywords(settings)
        self._max_notebook_bytes = self.settings.max_notebook_bytes
        self._rules = LocationRules.of(
            self.settings.allowed_paths, self.settings.allowed_hosts, self.settings.hidden_paths
        )
        self._fetcher = Fetcher(self.settings, self._rules)
        # The bwrap prefix's program, probed at the first start (None: no sandbox); see containment.
        self._bwrap: str | None = None
        self._bwrap_probed = False
        # Runners this instance started, kept only to reap them (no zombies); never needed to poll.
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def poll_interval(self, spec: LaunchSpec) -> float:
        return 0.2  # polling reads a file and /proc: cheap

    async def prepare(self, spec: LaunchSpec) -> None:
        kind = _executable_type(spec)
        if kind == "notebook":
            await self._prepare_notebook(spec)
        elif kind == "command":
            await prepare_command(spec)
        else:
            await _prepare_container(spec)

    async def prepare_storage(self, spec: LaunchSpec, storage: dict[str, Any]) -> None:
        await local_data.prepare_storage(spec, storage)

    async def prepare_data(self, spec: LaunchSpec, data: dict[str, Any]) -> None:
        await local_data.prepare_data(
            spec, data, self._fetcher, self._rules, max_bytes=self.settings.max_data_bytes
        )

    def _limits(self, spec: LaunchSpec) -> Limits:
        slot_seconds = (spec.slot_end - datetime.now(UTC)).total_seconds()
        return limits_for(
            spec.cores,
            spec.memory_gib,
            slot_seconds,
            open_files=self.settings.max_open_files,
            processes=self.settings.max_processes,
        )

    async def _sandbox(self, spec: LaunchSpec) -> list[str]:
        """The bwrap prefix for a run in ``spec.work_dir``; empty where there is no sandbox."""
        if not self._bwrap_probed:
            self._bwrap = await asyncio.to_thread(usable_bwrap) if self.settings.sandbox else None
            self._bwrap_probed = True
        if self._bwrap is None:
            return []
        return sandbox_prefix(self._bwrap, spec.work_dir, self.settings.hidden_paths)

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        return 2.0

    async def start(self, spec: LaunchSpec) -> str:
        kind = _executable_type(spec)
        if kind == "notebook":
            return await self._start_notebook(spec)
        if kind == "command":
            process = await start_command(
                spec, THREAD_LIMIT_VARIABLES, self._limits(spec), await self._sandbox(spec)
            )
            self._children[process.pid] = process
            return _process_handle(process.pid, log=COMMAND_LOG_FILE)
        return await _start_container(spec)

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        self._reap()
        parsed = _parse_handle(handle)
        if isinstance(parsed, ContainerHandle):
            return await _poll_container(spec, parsed)
        work_dir = spec.work_dir
        status = _status_from_result(work_dir)
        if status is not None:
            return status
        if _group_alive(parsed.pid, parsed.start_time):
            return RunStatus(state=RunState.RUNNING, outputs=_outputs(work_dir))
        # The runner may have written its result and exited between the two checks above.
        status = _status_from_result(work_dir)
        if status is not None:
            return status
        if (work_dir / RESULT_FILE).exists():
            # Not parseable, and nothing of the run is left that could still be writing it.
            return RunStatus(
                state=RunState.FAILED, message=f"unreadable {RESULT_FILE}", outputs=_outputs(work_dir)
            )
        message = f"the local runner exited without a result (see {parsed.log})"
        tail = _log_tail(work_dir / parsed.log)
        return RunStatus(
            state=RunState.FAILED,
            message=f"{message}\n{tail}" if tail else message,
            outputs=_outputs(work_dir),
        )

    async def cancel(self, spec: LaunchSpec, handle: str) -> None:
        parsed = _parse_handle(handle)
        if isinstance(parsed, ContainerHandle):
            await _cancel_container(spec, parsed)
            return
        if _status_from_result(spec.work_dir) is None:
            # Tells the runner that the kernel's death is a cancel, not the notebook's failure.
            (spec.work_dir / CANCEL_MARKER).touch()
        await self._stop(spec.work_dir, parsed)
        if _status_from_result(spec.work_dir) is None:
            # The runner was killed before it could say so itself (or while it was writing).
            write_result(spec.work_dir / RESULT_FILE, RunState.CANCELLED, CANCELLED_MESSAGE)

    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        if handle is None:
            return
        parsed = _parse_handle(handle)
        if isinstance(parsed, ContainerHandle):
            await _release_container(spec, parsed)
            return
        await self._stop(spec.work_dir, parsed)

    # -- notebooks ------------------------------------------------------------------------------

    async def _prepare_notebook(self, spec: LaunchSpec) -> None:
        location = spec.executable.get("location")
        if not isinstance(location, str) or not location:
            raise PlatformError("a JupyterNotebook executable needs a location")
        if spec.executable.get("notebook_mode") == NotebookMode.INTERACTIVE:
            raise PlatformError(
                "the local platform executes notebooks to their end and cannot open one for you: "
                "ask for notebook_mode batch (or leave it out), or use a pool that opens notebooks (canfar)"
            )
        content = await self._fetch(location)
        try:
            notebook = await asyncio.to_thread(_validated_notebook, content)
        except Exception:
            # Only what kind of problem: a parser's message may quote the content, which may be a
            # file the user could not read otherwise.
            raise PlatformError(
                f"{location} is not a valid Jupyter notebook (version 4, UTF-8 JSON)"
            ) from None
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(nbformat.write, notebook, spec.work_dir / INPUT_FILE)

    async def _fetch(self, location: str) -> bytes:
        if location.startswith(("http://", "https://")):
            return await self._fetcher.read(location, self._max_notebook_bytes, "notebook")
        if not location.startswith("file:") and not Path(location).is_absolute():
            raise PlatformError(
                f"notebook location {location!r} must be an absolute path, a file:// URL or an http(s) URL"
            )
        try:
            path = local_path(location, self._rules, "the notebook")
        except LocationRefused as refused:
            raise PlatformError(refused.message) from None
        if not path.is_file():
            raise PlatformError(f"notebook not found at {location}")
        if path.stat().st_size > self._max_notebook_bytes:
            raise PlatformError(f"notebook at {location} is larger than {self._max_notebook_bytes} bytes")
        return await asyncio.to_thread(path.read_bytes)

    async def _start_notebook(self, spec: LaunchSpec) -> str:
        work_dir = spec.work_dir
        if not (work_dir / INPUT_FILE).is_file():
            raise PlatformError("the notebook was not prepared before start")
        # A retried start must not be confused by the files of an earlier attempt.
        for stale in (RESULT_FILE, CANCEL_MARKER, KERNEL_FILE):
            (work_dir / stale).unlink(missing_ok=True)
        # Booking limits first, so the user's own environment can still lower (or raise) them.
        env = run_environment(os.environ, work_dir, THREAD_LIMIT_VARIABLES, spec.cores, spec.environment)
        sandbox = await self._sandbox(spec)
        command = [
            sys.executable, "-I", RUNNER_SCRIPT,
            "--input", str(work_dir / INPUT_FILE),
            "--output", str(work_dir / OUTPUT_FILE),
            "--result", str(work_dir / RESULT_FILE),
        ]  # fmt: skip
        if sandbox:
            # In its own pid namespace the kernel's pid means nothing out here: the run is stopped
            # through its process group, whose end takes the whole namespace with it.
            command.append("--no-kernel-file")
        limits = self._limits(spec)
        process = await spawn_detached(sandbox + command, work_dir, env, work_dir / LOG_FILE, limits)
        self._children[process.pid] = process
        return _process_handle(process.pid, log=LOG_FILE)

    async def _stop(self, work_dir: Path, handle: ProcessHandle) -> None:
        """Stop the kernel, then the runner, then SIGKILL whatever is left of either."""
        self._reap()  # a zombie child of ours would otherwise keep its group "alive" to killpg
        runner = (handle.pid, handle.start_time)
        groups = [runner]
        kernel = read_json_object(work_dir / KERNEL_FILE)
        if kernel is not None and isinstance(kernel.get("pid"), int):
            groups.append((kernel["pid"], kernel.get("start_time")))
        # The kernel goes first: the runner then sees a dead kernel, saves the partial notebook and
        # exits by itself. Signalling the runner at the same time races with nbclient's own signal
        # handler and fills runner.log with tracebacks. The runner is only signalled if it lingers.
        stages = [
            (signal.SIGTERM, groups[1:], TERM_GRACE_SECONDS),
            (signal.SIGTERM, groups, TERM_GRACE_SECONDS),
            (signal.SIGKILL, groups, KILL_GRACE_SECONDS),
        ]
        for sig, targets, grace in stages:
            alive = [group for group in targets if _group_alive(*group)]
            if not any(_group_alive(*group) for group in groups):
                return
            for pgid, _ in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            if not alive:
                continue
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self._reap()
                if not any(_group_alive(*group) for group in groups):
                    return
                await asyncio.sleep(0.05)
        raise PlatformError(f"the local run (pid {handle.pid}) did not stop after SIGKILL", transient=True)

    def _reap(self) -> None:
        for pid, process in list(self._children.items()):
            if process.poll() is not None:
                del self._children[pid]

    def exited(self, spec: LaunchSpec, handle: str) -> asyncio.Future[None] | None:
        """A future resolved when the run's leader process exits (already resolved if it is gone).

        Works for a run started by an earlier launcher too: a pidfd needs no parenthood. None for
        containers, or where pidfds are not available; cancelling the future closes the pidfd.
        """
        parsed = _parse_handle(handle)
        if not isinstance(parsed, ProcessHandle) or not hasattr(os, "pidfd_open"):
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        try:
            pidfd = os.pidfd_open(parsed.pid)
        except ProcessLookupError:
            future.set_result(None)
            return future
        except OSError:
            return None
        if parsed.pid not in self._children:
            # Opened after the handle was written: the pid may since belong to another process
            # (a child of ours keeps its pid until we reap it).
            info = _proc_info(parsed.pid)
            if info is None or info.start_time != parsed.start_time:
                os.close(pidfd)
                future.set_result(None)
                return future

        def on_exit() -> None:
            if not future.done():
                future.set_result(None)

        def close(_: asyncio.Future[None]) -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            process = self._children.get(parsed.pid)
            if process is not None and process.poll() is not None:
                del self._children[parsed.pid]  # reaped at once: no zombie until the next poll

        loop.add_reader(pidfd, on_exit)
        future.add_done_callback(close)
        return future


# -- handles --------------------------------------------------------------------------------------


class ProcessHandle(NamedTuple):
    pid: int
    start_time: int | None
    # The run's log in the work dir: runner.log for notebooks, command.log for commands.
    log: str = LOG_FILE


def _process_handle(pid: int, *, log: str) -> str:
    return json.dumps({"type": "process", "pid": pid, "start_time": proc_start_time(pid), "log": log})


class ContainerHandle(NamedTuple):
    container: str


def _parse_handle(handle: str) -> ProcessHandle | ContainerHandle:
    try:
        data = json.loads(handle)
        if data["type"] == "process":
            # Handles written before commands existed have no "log"; only known names are trusted.
            log = data.get("log", LOG_FILE)
            if log in (LOG_FILE, COMMAND_LOG_FILE):
                return ProcessHandle(int(data["pid"]), data.get("start_time"), log)
        if data["type"] == "container":
            return ContainerHandle(str(data["container"]))
    except (ValueError, KeyError, TypeError):
        pass
    raise PlatformError(f"not a local platform handle: {handle!r}")


def _executable_type(spec: LaunchSpec) -> str:
    kind = spec.executable_kind
    if kind == JUPYTER_NOTEBOOK_KIND:
        return "notebook"
    if kind == DOCKER_CONTAINER_KIND:
        return "container"
    if kind == LOCAL_COMMAND_KIND:
        return "command"
    raise PlatformError(f"the local platform cannot run executables of kind {kind or '(none)'}")


# -- processes (Linux /proc) ----------------------------------------------------------------------


class _ProcInfo(NamedTuple):
    state: str
    pgrp: int
    start_time: int


def _proc_info(pid: int) -> _ProcInfo | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return _ProcInfo(fields[0], int(fields[2]), int(fields[19]))


def _group_alive(pgid: int, start_time: int | None) -> bool:
    """Whether the process group led by our process still has a live (non-zombie) member.

    A zombie counts as gone: it runs nothing, and one we did not start is not ours to reap.
    """
    leader = _proc_info(pgid)
    if leader is not None:
        if start_time is not None and leader.start_time != start_time:
            # The pid was reused by another process: ours (and, being a leader, its group) is gone,
            # because Linux does not hand out a pid that is still some group's id.
            return False
        if leader.pgrp == pgid and leader.state not in ("Z", "X"):
            return True  # the common case, without reading every process in /proc
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False  # no process at all, zombie or not, is left in the group
    except PermissionError:
        pass
    # Someone is left: only a live (non-zombie) member counts.
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _proc_info(int(entry.name))
            if info is not None and info.pgrp == pgid and info.state not in ("Z", "X"):
                return True
    return False


# -- files in the work dir ------------------------------------------------------------------------


def _status_from_result(work_dir: Path) -> RunStatus | None:
    """The recorded outcome; None while there is none: no file, or one not completely written yet.

    The command wrapper writes its record in place (see `local_command`), so a half-written file
    is possible while it lives; the caller decides, from the process group, whether one ever comes.
    """
    result = read_json_object(work_dir / RESULT_FILE)
    if result is None:
        return None
    outputs = _outputs(work_dir)
    command = command_status(result, work_dir, outputs)
    if command is not None:
        return command
    state = result.get("state")
    if state not in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED):
        return RunStatus(state=RunState.FAILED, message=f"unreadable {RESULT_FILE}", outputs=outputs)
    message = result.get("message") or (None if state == RunState.SUCCEEDED else f"the run ended {state}")
    if state == RunState.FAILED and isinstance(message, str):
        limit = memory_limit_hit(work_dir, message, None)
        if limit is not None:
            message = f"the notebook exceeded its memory limit of {limit}: {message}"
    return RunStatus(state=RunState(state), message=message, outputs=outputs)


def _outputs(work_dir: Path) -> dict[str, str]:
    # A work dir holds one executable's run, so at most one of the two logs exists.
    log = COMMAND_LOG_FILE if (work_dir / COMMAND_LOG_FILE).exists() else LOG_FILE
    names = {"notebook": OUTPUT_FILE, "log": log, "container_log": CONTAINER_LOG_FILE}
    return {name: str(work_dir / file) for name, file in names.items() if (work_dir / file).exists()}


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])[-2000:]


def _validated_notebook(content: bytes) -> Any:
    notebook = nbformat.reads(  # type: ignore[no-untyped-call]  # nbformat is untyped
        content.decode("utf-8"), as_version=nbformat.NO_CONVERT
    )
    if notebook.get("nbformat") != 4:
        raise ValueError(f"nbformat {notebook.get('nbformat')} is not supported, only version 4")
    nbformat.validate(notebook)
    return notebook


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:500]


# -- containers -----------------------------------------------------------------------------------

_ENGINE_CHECK_TIMEOUT = 5.0
# Per process: whether a container engine answers. None = not checked yet, "" = reachable.
_engine_error: str | None = None


async def _docker(*args: str, time_limit: float | None = None) -> tuple[int, str, str]:
    try:
        process = await asyncio.create_subprocess_exec(
            "docker", *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError:
        return 127, "", "docker: command not found"
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), time_limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, "", f"timed out after {time_limit:g} s"
    assert process.returncode is not None
    return process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")


async def _container_engine_error() -> str:
    """Empty when a container engine is reachable, else why not. Asked once per process."""
    global _engine_error
    if _engine_error is None:
        code, _, stderr = await _docker("info", time_limit=_ENGINE_CHECK_TIMEOUT)
        _engine_error = "" if code == 0 else (stderr.strip().splitlines() or [f"exit code {code}"])[0]
    return _engine_error


def _container_name(spec: LaunchSpec) -> str:
    return "eb-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", spec.session_id)


def _image(spec: LaunchSpec) -> str:
    image = spec.executable.get("image")
    locations = image.get("locations") if isinstance(image, dict) else None
    if isinstance(locations, list) and locations and isinstance(locations[0], str):
        return locations[0]
    location = spec.executable.get("location")
    if isinstance(location, str) and location:
        return location
    raise PlatformError("a DockerContainer executable needs image.locations")


async def _prepare_container(spec: LaunchSpec) -> None:
    engine_error = await _container_engine_error()
    if engine_error:
        raise PlatformError(
            "the local platform cannot run DockerContainer executables: "
            f"no container engine is reachable (docker info: {engine_error})"
        )
    if spec.executable.get("privileged"):
        raise PlatformError("the local platform does not run privileged containers")
    image = _image(spec)
    code, _, stderr = await _docker("pull", image)
    if code != 0:
        raise PlatformError(f"cannot pull image {image}: {_first_line(Exception(stderr))}")
    spec.work_dir.mkdir(parents=True, exist_ok=True)


async def _start_container(spec: LaunchSpec) -> str:
    name = _container_name(spec)
    (spec.work_dir / RESULT_FILE).unlink(missing_ok=True)
    # A retried start reuses the name: a leftover container from the earlier attempt must go.
    await _docker("rm", "--force", name)
    # No --rm: the exit code must outlive the container's exit; release removes it.
    args = ["run", "--detach", "--name", name, "--cpus", str(spec.cores), "--memory", f"{spec.memory_gib}g"]
    args += ["--label", f"execution-broker.session={spec.session_id}"]
    user_env = spec.executable.get("environment")
    environment = (user_env if isinstance(user_env, dict) else {}) | spec.environment
    for key, value in environment.items():
        args += ["--env", f"{key}={value}"]
    entrypoint = spec.executable.get("entrypoint")
    if isinstance(entrypoint, str) and entrypoint:
        args += ["--entrypoint", entrypoint]
    command = spec.executable.get("command")
    args += [_image(spec), *(str(part) for part in command or [])]
    code, _, stderr = await _docker(*args)
    if code != 0:
        raise PlatformError(f"docker run failed: {_first_line(Exception(stderr))}")
    return json.dumps({"type": "container", "container": name})


async def _container_state(name: str) -> dict[str, Any] | None:
    code, stdout, _ = await _docker("inspect", "--format", "{{json .State}}", name)
    if code != 0:
        return None
    state = json.loads(stdout)
    return state if isinstance(state, dict) else None


def _status_from_container(state: dict[str, Any], work_dir: Path) -> RunStatus:
    if state.get("Status") in ("created", "running", "restarting", "paused"):
        return RunStatus(state=RunState.RUNNING, outputs=_outputs(work_dir))
    exit_code = state.get("ExitCode")
    if exit_code == 0:
        return RunStatus(state=RunState.SUCCEEDED, outputs=_outputs(work_dir))
    detail = f": {state['Error']}" if state.get("Error") else ""
    oom = " (out of memory)" if state.get("OOMKilled") else ""
    return RunStatus(
        state=RunState.FAILED, message=f"the container exited with code {exit_code}{oom}{detail}",
        outputs=_outputs(work_dir),
    )  # fmt: skip


async def _poll_container(spec: LaunchSpec, handle: ContainerHandle) -> RunStatus:
    status = _status_from_result(spec.work_dir)
    if status is not None:
        return status
    state = await _container_state(handle.container)
    if state is None:
        return RunStatus(state=RunState.FAILED, message=f"the container {handle.container} has disappeared")
    return _status_from_container(state, spec.work_dir)


async def _record_container_end(spec: LaunchSpec, handle: ContainerHandle, *, cancelling: bool) -> None:
    """Keep the outcome and the logs in the work dir before the container is removed."""
    if (spec.work_dir / RESULT_FILE).exists():
        return
    state = await _container_state(handle.container)
    if state is None:
        if cancelling:
            write_result(spec.work_dir / RESULT_FILE, RunState.CANCELLED, CANCELLED_MESSAGE)
        return
    _, logs, errors = await _docker("logs", handle.container)
    (spec.work_dir / CONTAINER_LOG_FILE).write_text(logs + errors)
    status = _status_from_container(state, spec.work_dir)
    if status.state == RunState.RUNNING:
        if not cancelling:
            return
        status = RunStatus(state=RunState.CANCELLED, message=CANCELLED_MESSAGE)
    write_result(spec.work_dir / RESULT_FILE, status.state, status.message)


async def _cancel_container(spec: LaunchSpec, handle: ContainerHandle) -> None:
    await _record_container_end(spec, handle, cancelling=True)
    await _docker("rm", "--force", handle.container)


async def _release_container(spec: LaunchSpec, handle: ContainerHandle) -> None:
    await _record_container_end(spec, handle, cancelling=False)
    await _docker("rm", "--force", handle.container)
