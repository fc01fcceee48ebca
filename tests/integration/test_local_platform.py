"""The local platform: the platform contract, plus what only a local run can show."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nbformat
import pytest

from services.launcher.platforms.local.platform import LocalPlatform
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_DATA_KIND
from shared.platforms.contract import PlatformContract, PlatformFactory, launch, wait_for_final
from shared.platforms.port import LaunchSpec, Platform, PlatformError, RunState
from shared.platforms.registry import UnknownPlatform, load_platform

NOTEBOOKS = Path(__file__).parents[1] / "data" / "notebooks"
KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable"
NOTEBOOK_KIND = f"{KINDS}/jupyter-notebook.yaml"
DOCKER_KIND = f"{KINDS}/docker-container.yaml"
RUN_TIMEOUT = 60.0


def local_platform(**settings: Any) -> LocalPlatform:
    """The plugin as a pool that allows the test notebooks, pytest's folders and the loopback host
    (the tests' HTTP server) would run it; not sandboxed: these tests watch the run's processes
    from outside, pid by pid (test_local_containment.py runs it sandboxed)."""
    allowed = {"allowed_paths": [NOTEBOOKS, Path(tempfile.gettempdir())], "allowed_hosts": ["127.0.0.1"]}
    return LocalPlatform(**(allowed | {"sandbox": False} | settings))


def make_spec(tmp_path: Path, executable: dict[str, Any], cores: int = 2) -> LaunchSpec:
    return LaunchSpec(
        session_id=f"session-{tmp_path.name}",
        executable=executable,
        cores=cores,
        memory_gib=1,
        slot_end=datetime.now(UTC) + timedelta(hours=1),
        work_dir=tmp_path / "work",
    )


def notebook_spec(tmp_path: Path, location: str, cores: int = 2) -> LaunchSpec:
    return make_spec(tmp_path, {"kind": NOTEBOOK_KIND, "location": location}, cores)


def read_notebook(path: Path | str, as_version: int = 4) -> Any:
    return nbformat.read(path, as_version=as_version)  # type: ignore[no-untyped-call]  # nbformat is untyped


def live_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc independently of the plugin."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def kernel_pid(spec: LaunchSpec) -> int | None:
    path = spec.work_dir / "kernel.json"
    return int(json.loads(path.read_text())["pid"]) if path.exists() else None


class TestLocalPlatformContract(PlatformContract):
    run_timeout = RUN_TIMEOUT

    @pytest.fixture
    def platform_factory(self) -> PlatformFactory:
        return local_platform

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        return notebook_spec(tmp_path, str(NOTEBOOKS / "ok.ipynb"))

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        return notebook_spec(tmp_path, str(NOTEBOOKS / "failing.ipynb"))

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        return notebook_spec(tmp_path, str(NOTEBOOKS / "slow.ipynb"))

    async def wait_until_busy(self, platform: Platform, spec: LaunchSpec, handle: str) -> None:
        # RUNNING is true from the first instant; wait for the kernel too, so that cancel has to
        # stop the kernel's separate process group, not just the runner.
        deadline = time.monotonic() + RUN_TIMEOUT
        while kernel_pid(spec) is None:
            assert (await platform.poll(spec, handle)).state == RunState.RUNNING
            assert time.monotonic() < deadline, "the kernel never started"
            await asyncio.sleep(0.05)

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        runner = json.loads(handle)["pid"]
        kernel = kernel_pid(spec)
        assert kernel is not None
        assert live_members(runner) == []
        assert live_members(kernel) == []


# -- local specifics ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notebook_server() -> Iterator[str]:
    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(NOTEBOOKS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_prepare_fetches_a_notebook_over_http(tmp_path: Path, notebook_server: str) -> None:
    spec = notebook_spec(tmp_path, f"{notebook_server}/ok.ipynb")
    await local_platform().prepare(spec)
    fetched = read_notebook(spec.work_dir / "input.ipynb", as_version=4)
    assert fetched.cells == read_notebook(NOTEBOOKS / "ok.ipynb", as_version=4).cells


async def test_prepare_accepts_a_file_url(tmp_path: Path) -> None:
    spec = notebook_spec(tmp_path, (NOTEBOOKS / "ok.ipynb").as_uri())
    await local_platform().prepare(spec)
    assert (spec.work_dir / "input.ipynb").is_file()


async def test_http_404_is_a_platform_error(tmp_path: Path, notebook_server: str) -> None:
    url = f"{notebook_server}/missing.ipynb"
    with pytest.raises(PlatformError, match=f"HTTP 404 fetching {url}") as caught:
        await local_platform().prepare(notebook_spec(tmp_path, url))
    assert not caught.value.transient


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/nowhere/at/all.ipynb", "'/nowhere/at/all.ipynb' is not inside a folder this pool allows"),
        ("relative/path.ipynb", "must be an absolute path"),
    ],
)
async def test_bad_locations_are_platform_errors(tmp_path: Path, location: str, expected: str) -> None:
    with pytest.raises(PlatformError, match=expected):
        await local_platform().prepare(notebook_spec(tmp_path, location))


@pytest.mark.parametrize(
    "content",
    [
        "this is not json",
        json.dumps({"cells": "not a list", "nbformat": 4, "nbformat_minor": 5, "metadata": {}}),
        json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": []}),
    ],
    ids=["not-json", "bad-cells", "nbformat-3"],
)
async def test_an_invalid_notebook_is_a_platform_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "invalid.ipynb"
    path.write_text(content)
    with pytest.raises(PlatformError) as caught:
        await local_platform().prepare(notebook_spec(tmp_path, str(path)))
    # What is wrong, never what the file holds (it may be a file the user could not read).
    assert caught.value.message == f"{path} is not a valid Jupyter notebook (version 4, UTF-8 JSON)"


async def test_an_interactive_notebook_is_refused_and_batch_runs(tmp_path: Path) -> None:
    location = str(NOTEBOOKS / "ok.ipynb")
    interactive = make_spec(
        tmp_path, {"kind": NOTEBOOK_KIND, "location": location, "notebook_mode": "interactive"}
    )
    with pytest.raises(PlatformError, match="cannot open one for you"):
        await local_platform().prepare(interactive)
    batch = make_spec(tmp_path, {"kind": NOTEBOOK_KIND, "location": location, "notebook_mode": "batch"})
    await local_platform().prepare(batch)
    assert (batch.work_dir / "input.ipynb").is_file()


async def test_the_output_notebook_holds_the_cell_outputs(tmp_path: Path) -> None:
    spec = notebook_spec(tmp_path, str(NOTEBOOKS / "ok.ipynb"), cores=3)
    platform = local_platform()
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    assert status.outputs == {
        "notebook": str(spec.work_dir / "output.ipynb"),
        "log": str(spec.work_dir / "runner.log"),
    }
    executed = read_notebook(status.outputs["notebook"], as_version=4)
    printed = "".join(output.get("text", "") for output in executed.cells[1].outputs)
    assert "hello from the notebook" in printed
    # The kernel is this interpreter, its thread pools follow the booking, and it works in work_dir.
    assert f"executable {sys.executable}\n" in printed
    assert "threads 3\n" in printed
    assert f"cwd {spec.work_dir}\n" in printed
    assert executed.cells[2].outputs[0]["data"]["text/plain"] == "42"
    assert (spec.work_dir / "written-by-notebook.txt").read_text() == "42"
    handle_data = json.loads(handle)
    assert handle_data["pid"] > 0 and handle_data["start_time"] > 0


async def test_a_failing_cell_is_named_and_the_partial_notebook_kept(tmp_path: Path) -> None:
    spec = notebook_spec(tmp_path, str(NOTEBOOKS / "failing.ipynb"))
    platform = local_platform()
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message == "cell 1 (counting from 0) failed: ValueError: deliberate failure for the tests"
    executed = read_notebook(status.outputs["notebook"], as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "before the failure\n"
    assert executed.cells[1].outputs[0]["output_type"] == "error"
    assert executed.cells[2].outputs == []


async def test_a_runner_that_dies_without_a_result_is_failed_and_release_cleans_up(tmp_path: Path) -> None:
    spec = notebook_spec(tmp_path, str(NOTEBOOKS / "slow.ipynb"))
    platform = local_platform()
    handle = await launch(platform, spec)
    contract = TestLocalPlatformContract()
    await contract.wait_until_busy(platform, spec, handle)
    runner = json.loads(handle)["pid"]
    os.killpg(runner, signal.SIGKILL)  # as the OOM killer would
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message and status.message.startswith(
        "the local runner exited without a result (see runner.log)"
    )
    await platform.release(spec, handle)
    await contract.assert_run_stopped(spec, handle)


@pytest.fixture(scope="module")
def container_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


async def test_docker_containers_need_a_container_engine(tmp_path: Path, container_engine: bool) -> None:
    spec = make_spec(
        tmp_path,
        {
            "kind": DOCKER_KIND,
            "image": {"locations": ["docker.io/library/busybox:latest"]},
            "command": ["true"],
        },
    )
    platform = local_platform()
    if not container_engine:
        with pytest.raises(PlatformError, match="no container engine is reachable"):
            await platform.prepare(spec)
        return
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    await platform.release(spec, handle)


async def test_other_executable_kinds_are_refused(tmp_path: Path) -> None:
    kind = f"{KINDS}/singularity-container.yaml"
    with pytest.raises(PlatformError, match=f"cannot run executables of kind {kind}"):
        await local_platform().prepare(make_spec(tmp_path, {"kind": kind}))


async def test_start_without_prepare_is_a_platform_error(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match="not prepared"):
        await local_platform().start(notebook_spec(tmp_path, str(NOTEBOOKS / "ok.ipynb")))


def test_the_registry_loads_local_and_ignores_unknown_settings() -> None:
    platform = load_platform("local", some_setting_for_another_plugin="x")
    assert isinstance(platform, LocalPlatform)
    assert platform.name == "local"


def test_the_registry_names_the_installed_platforms_for_an_unknown_one() -> None:
    with pytest.raises(UnknownPlatform, match=r"'nope'.*installed: .*local"):
        load_platform("nope")


async def test_cancel_right_after_start_stops_the_runner(tmp_path: Path) -> None:
    # Before the runner has a kernel (or even its signal handlers): the plain SIGTERM path.
    spec = notebook_spec(tmp_path, str(NOTEBOOKS / "slow.ipynb"))
    platform = local_platform()
    handle = await launch(platform, spec)
    await platform.cancel(spec, handle)
    status = await platform.poll(spec, handle)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by request")
    assert live_members(json.loads(handle)["pid"]) == []
    await platform.release(spec, handle)


FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls"
case "$1" in
  run) echo 0123abcd ;;
  inspect) if [ -f "$(dirname "$0")/exited" ]; then
             echo '{"Status": "exited", "ExitCode": 3, "Error": "", "OOMKilled": false}'
           else echo '{"Status": "running", "ExitCode": 0}'; fi ;;
  logs) echo "container output" ;;
esac
"""


async def test_docker_runs_follow_the_container_lifecycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine has no container engine: a fake `docker` checks the commands and the state mapping.
    from services.launcher.platforms.local import platform as local

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(local, "_engine_error", None)
    spec = make_spec(
        tmp_path,
        {
            "kind": DOCKER_KIND,
            "image": {"locations": ["busybox:1"]},
            "entrypoint": "sh",
            "command": ["-c", "x"],
        },
    )
    platform = local_platform()
    handle = await launch(platform, spec)
    assert json.loads(handle) == {"type": "container", "container": f"eb-{spec.session_id}"}
    assert (await platform.poll(spec, handle)).state == RunState.RUNNING
    (bin_dir / "exited").touch()
    status = await platform.poll(spec, handle)
    assert (status.state, status.message) == (RunState.FAILED, "the container exited with code 3")
    await platform.release(spec, handle)
    # After removal the outcome and the logs survive in the work dir.
    (bin_dir / "exited").unlink()
    after = await local_platform().poll(spec, handle)
    assert (after.state, after.message) == (RunState.FAILED, "the container exited with code 3")
    assert after.outputs["container_log"] == str(spec.work_dir / "container.log")
    assert (spec.work_dir / "container.log").read_text() == "container output\n"
    calls = (bin_dir / "calls").read_text().splitlines()
    assert f"run --detach --name eb-{spec.session_id} --cpus 2 --memory 1g" in calls[3]
    assert calls[3].endswith("--entrypoint sh busybox:1 -c x")
    assert calls[-1] == f"rm --force eb-{spec.session_id}"


# -- LocalCommand ---------------------------------------------------------------------------------

COMMAND_KIND = "urn:execution-broker:kinds/executable/local-command"


def command_spec(
    tmp_path: Path, command: list[str], environment: dict[str, str] | None = None, cores: int = 2
) -> LaunchSpec:
    executable: dict[str, Any] = {"kind": COMMAND_KIND, "command": command}
    if environment is not None:
        executable["environment"] = environment
    return make_spec(tmp_path, executable, cores)


class TestLocalCommandContract(PlatformContract):
    run_timeout = RUN_TIMEOUT

    @pytest.fixture
    def platform_factory(self) -> PlatformFactory:
        return local_platform

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        return command_spec(tmp_path, [sys.executable, "-c", "print('hi')"])

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        return command_spec(tmp_path, [sys.executable, "-c", "import sys; sys.exit(3)"])

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        return command_spec(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"])

    async def wait_until_busy(self, platform: Platform, spec: LaunchSpec, handle: str) -> None:
        # RUNNING is true from the first instant; wait until the wrapper has started the command.
        runner = json.loads(handle)["pid"]
        deadline = time.monotonic() + RUN_TIMEOUT
        while len(live_members(runner)) < 2:
            assert (await platform.poll(spec, handle)).state == RunState.RUNNING
            assert time.monotonic() < deadline, "the command never started"
            await asyncio.sleep(0.02)

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        assert live_members(json.loads(handle)["pid"]) == []


async def run_command(spec: LaunchSpec) -> tuple[str, Any]:
    platform = local_platform()
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    await platform.release(spec, handle)
    return handle, status


async def test_a_command_succeeds_with_its_output_in_the_log(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["echo", "hello from the broker"])
    handle, status = await run_command(spec)
    assert (status.state, status.message) == (RunState.SUCCEEDED, "exit code 0")
    assert status.outputs == {"log": str(spec.work_dir / "command.log")}
    assert (spec.work_dir / "command.log").read_text() == "hello from the broker\n"
    assert json.loads(handle)["log"] == "command.log"


async def test_arguments_are_not_interpreted_by_a_shell(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["echo", "$HOME; `id` | *"])
    _, status = await run_command(spec)
    assert status.state == RunState.SUCCEEDED
    assert (spec.work_dir / "command.log").read_text() == "$HOME; `id` | *\n"


async def test_a_failing_command_reports_its_exit_code_and_the_end_of_its_log(tmp_path: Path) -> None:
    script = "import sys; print('working'); print('something broke', file=sys.stderr); sys.exit(3)"
    _, status = await run_command(command_spec(tmp_path, [sys.executable, "-u", "-c", script]))
    assert status.state == RunState.FAILED
    assert status.message == "exit code 3\nworking\nsomething broke"


async def test_a_missing_command_is_failed_with_a_clear_message(tmp_path: Path) -> None:
    _, status = await run_command(command_spec(tmp_path, ["no-such-command-for-the-broker", "x"]))
    assert (status.state, status.message) == (
        RunState.FAILED,
        "command not found: no-such-command-for-the-broker",
    )


async def test_a_file_that_is_not_executable_is_failed_with_a_clear_message(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho never\n")
    _, status = await run_command(command_spec(tmp_path, [str(script)]))
    assert status.state == RunState.FAILED
    assert status.message == f"command not executable: {script} (permission denied)"


async def test_the_command_gets_its_environment_thread_limits_and_work_dir(tmp_path: Path) -> None:
    script = "import os; print(os.environ['GREETING'], os.environ['OMP_NUM_THREADS'], os.getcwd())"
    spec = command_spec(
        tmp_path, [sys.executable, "-c", script], environment={"GREETING": "bonjour"}, cores=3
    )
    _, status = await run_command(spec)
    assert status.state == RunState.SUCCEEDED, status.message
    assert (spec.work_dir / "command.log").read_text() == f"bonjour 3 {spec.work_dir}\n"


async def test_the_user_may_override_the_thread_limits(tmp_path: Path) -> None:
    script = "import os; print(os.environ['OMP_NUM_THREADS'])"
    spec = command_spec(tmp_path, [sys.executable, "-c", script], environment={"OMP_NUM_THREADS": "1"})
    await run_command(spec)
    assert (spec.work_dir / "command.log").read_text() == "1\n"


async def test_cancel_kills_the_children_the_command_spawned(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["sh", "-c", "sleep 30 & echo $! > child.pid; wait"])
    platform = local_platform()
    handle = await launch(platform, spec)
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (spec.work_dir / "child.pid").exists() or not (spec.work_dir / "child.pid").read_text():
        assert time.monotonic() < deadline, "the command never spawned its child"
        await asyncio.sleep(0.02)
    child = int((spec.work_dir / "child.pid").read_text())
    os.kill(child, 0)  # alive
    started = time.monotonic()
    await platform.cancel(spec, handle)
    assert time.monotonic() - started < 3, "SIGTERM should have been enough"
    status = await platform.poll(spec, handle)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by request")
    assert live_members(json.loads(handle)["pid"]) == []
    await platform.release(spec, handle)


async def test_a_sigterm_to_the_wrapper_alone_reaches_the_command(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["sh", "-c", "sleep 30 & wait"])
    platform = local_platform()
    handle = await launch(platform, spec)
    await TestLocalCommandContract().wait_until_busy(platform, spec, handle)
    runner = json.loads(handle)["pid"]
    os.kill(runner, signal.SIGTERM)  # not the group: the wrapper must forward it
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    # Not a cancel the broker asked for: the command's own death is reported.
    assert status.state == RunState.FAILED
    assert status.message is not None and status.message.startswith("exit code -15 (killed by SIGTERM)")
    deadline = time.monotonic() + 5
    while live_members(runner):
        assert time.monotonic() < deadline, "the command's group outlived the wrapper"
        await asyncio.sleep(0.02)
    await platform.release(spec, handle)


async def test_a_command_runner_killed_without_a_result_points_at_command_log(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, [sys.executable, "-c", "import time; time.sleep(30)"])
    platform = local_platform()
    handle = await launch(platform, spec)
    await TestLocalCommandContract().wait_until_busy(platform, spec, handle)
    os.killpg(json.loads(handle)["pid"], signal.SIGKILL)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message and status.message.startswith(
        "the local runner exited without a result (see command.log)"
    )
    await platform.release(spec, handle)


@pytest.mark.parametrize(
    ("executable", "expected"),
    [
        ({"command": []}, "needs a command"),
        ({"command": "echo hi"}, "needs a command"),
        ({"command": ["echo"], "environment": {"A=B": "x"}}, "invalid variable name"),
    ],
)
async def test_a_malformed_command_is_refused_at_prepare(
    tmp_path: Path, executable: dict[str, Any], expected: str
) -> None:
    with pytest.raises(PlatformError, match=expected):
        await local_platform().prepare(make_spec(tmp_path, {"kind": COMMAND_KIND, **executable}))


async def test_a_retried_start_forgets_the_earlier_result(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["true"])
    platform = local_platform()
    first, _ = await run_command(spec)
    second = await platform.start(spec)
    assert json.loads(second)["pid"] != json.loads(first)["pid"]
    assert (await wait_for_final(platform, spec, second, RUN_TIMEOUT)).state == RunState.SUCCEEDED
    await platform.release(spec, second)


async def test_cancel_right_after_start_of_a_command(tmp_path: Path) -> None:
    # Possibly before the wrapper has its SIGTERM handler, or has started the command at all.
    spec = command_spec(tmp_path, ["sleep", "30"])
    platform = local_platform()
    handle = await launch(platform, spec)
    await platform.cancel(spec, handle)
    status = await platform.poll(spec, handle)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by request")
    assert live_members(json.loads(handle)["pid"]) == []
    await platform.release(spec, handle)


def test_the_command_wrapper_uses_the_shared_file_names() -> None:
    from services.launcher.platforms.local import command as local_command
    from services.launcher.platforms.local import platform as local
    from services.launcher.platforms.local import runner as local_runner

    assert local_command.RESULT_FILE == local.RESULT_FILE
    # The shell wrapper spells them out in its script.
    assert f"[ -e {local_runner.CANCEL_MARKER} ]" in local_command.WRAPPER_SCRIPT
    assert f"> {local.RESULT_FILE}" in local_command.WRAPPER_SCRIPT


# -- the command wrapper (/bin/sh) ----------------------------------------------------------------

LAUNCHER_SCRIPT = """
import asyncio, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from shared.platforms.port import LaunchSpec
from services.launcher.platforms.local.platform import LocalPlatform

async def main() -> None:
    spec = LaunchSpec.model_validate_json(sys.argv[1])
    platform = LocalPlatform()  # sandboxed where bwrap works: the sandbox outlives the launcher too
    await platform.prepare(spec)
    print(await platform.start(spec), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_command_outlives_a_killed_launcher_and_a_new_one_reads_its_result(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["sh", "-c", "sleep 1; echo finished after the launcher"])
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCHER_SCRIPT, spec.model_dump_json(), stdout=asyncio.subprocess.PIPE
    )
    assert launcher.stdout is not None
    handle = (await launcher.stdout.readline()).decode()
    launcher.kill()  # SIGKILL, while the command runs
    await launcher.wait()
    restarted = local_platform()
    assert (await restarted.poll(spec, handle)).state == RunState.RUNNING
    # Not a child of this process, and still watched: the exit is seen at once.
    exited = restarted.exited(spec, handle)
    assert exited is not None
    await asyncio.wait_for(exited, RUN_TIMEOUT)
    status = await restarted.poll(spec, handle)
    assert (status.state, status.message) == (RunState.SUCCEEDED, "exit code 0")
    assert (spec.work_dir / "command.log").read_text() == "finished after the launcher\n"
    await restarted.release(spec, handle)


async def test_exited_resolves_when_the_run_ends_and_at_once_after(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["sleep", "0.3"])
    platform = local_platform()
    handle = await launch(platform, spec)
    exited = platform.exited(spec, handle)
    assert exited is not None and not exited.done()
    await asyncio.wait_for(exited, RUN_TIMEOUT)
    assert (await platform.poll(spec, handle)).state == RunState.SUCCEEDED
    again = platform.exited(spec, handle)
    assert again is not None and again.done()
    # Cancelling a pending one (the driver does, when it stops watching) is harmless.
    slow = command_spec(tmp_path / "slow", ["sleep", "30"])
    slow_handle = await launch(platform, slow)
    pending = platform.exited(slow, slow_handle)
    assert pending is not None
    pending.cancel()
    await asyncio.sleep(0)
    await platform.cancel(slow, slow_handle)
    await platform.release(slow, slow_handle)


async def test_a_shell_builtin_name_is_not_run_as_the_builtin(tmp_path: Path) -> None:
    # `exit` is a builtin of the wrapper's shell, not a program: as with subprocess, it is not found.
    _, status = await run_command(command_spec(tmp_path, ["exit", "3"]))
    assert (status.state, status.message) == (RunState.FAILED, "command not found: exit")


async def test_the_program_is_found_in_the_commands_path_and_keeps_its_argv0(tmp_path: Path) -> None:
    python = Path(sys.executable)
    spec = command_spec(
        tmp_path,
        [python.name, "-c", "import sys; print(sys.orig_argv[0])"],
        environment={"PATH": str(python.parent)},
    )
    _, status = await run_command(spec)
    assert status.state == RunState.SUCCEEDED, status.message
    assert (spec.work_dir / "command.log").read_text() == f"{python.name}\n"


async def test_a_result_being_written_is_not_read_as_unreadable(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["sleep", "30"])
    platform = local_platform()
    handle = await launch(platform, spec)
    # What a reader could see while the wrapper writes its record in place.
    (spec.work_dir / "result.json").write_text('{"state": "SUCC')
    assert (await platform.poll(spec, handle)).state == RunState.RUNNING
    await platform.cancel(spec, handle)
    status = await platform.poll(spec, handle)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by request")
    await platform.release(spec, handle)


async def test_a_half_written_result_left_by_a_dead_run_is_unreadable(tmp_path: Path) -> None:
    spec = command_spec(tmp_path, ["sleep", "30"])
    platform = local_platform()
    handle = await launch(platform, spec)
    await TestLocalCommandContract().wait_until_busy(platform, spec, handle)
    os.killpg(json.loads(handle)["pid"], signal.SIGKILL)
    (spec.work_dir / "result.json").write_text('{"state": "SUCC')
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert (status.state, status.message) == (RunState.FAILED, "unreadable result.json")
    await platform.release(spec, handle)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (128, "exit code 128"),
        (137, "exit code -9 (killed by SIGKILL)"),
        (143, "exit code -15 (killed by SIGTERM)"),
        (255, "exit code 255"),
    ],
)
def test_exit_messages_follow_the_shell_convention(status: int, message: str) -> None:
    from services.launcher.platforms.local.command import exit_message

    assert exit_message(status) == message


@pytest.fixture
def redirecting_server() -> Iterator[str]:
    """Answers every GET with a redirect to the same port on `localhost` (a loopback name)."""

    class Redirect(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/ok.ipynb")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_a_redirect_to_an_internal_host_is_refused(tmp_path: Path, redirecting_server: str) -> None:
    # 127.0.0.1 is allowed by name; the redirect's `localhost` is not, though it is the same address.
    with pytest.raises(PlatformError, match="the host localhost has the internal address") as caught:
        await local_platform().prepare(notebook_spec(tmp_path, f"{redirecting_server}/start.ipynb"))
    assert not caught.value.transient


async def test_an_internal_url_is_refused_unless_the_pool_allows_its_host(
    tmp_path: Path, notebook_server: str
) -> None:
    with pytest.raises(PlatformError, match=r"internal address 127\.0\.0\.1") as caught:
        await local_platform(allowed_hosts=[]).prepare(notebook_spec(tmp_path, f"{notebook_server}/ok.ipynb"))
    assert not caught.value.transient


def data_item(location: str) -> dict[str, Any]:
    return {"kind": SIMPLE_DATA_KIND, "meta": {"name": "input"}, "location": location}


async def test_data_is_staged_only_from_allowed_folders_and_links_stay_links(tmp_path: Path) -> None:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    (allowed / "cube").mkdir(parents=True)
    secret.mkdir()
    (secret / "key").write_text("the broker's")
    (allowed / "cube" / "part").write_text("data")
    (allowed / "cube" / "leak").symlink_to(secret / "key")
    platform = local_platform(allowed_paths=[allowed])
    spec = make_spec(tmp_path, {"kind": LOCAL_COMMAND_KIND, "command": ["true"]})
    spec.work_dir.mkdir()
    for location in (str(secret / "key"), f"{allowed}/../secret/key", (secret / "key").as_uri()):
        with pytest.raises(PlatformError, match="not inside a folder this pool allows"):
            await platform.prepare_data(spec, data_item(location))
    await platform.prepare_data(spec, data_item(str(allowed / "cube")))
    staged = spec.work_dir / "data" / "input"
    assert (staged / "part").read_text() == "data"
    # Copied as a link, not as the file it names: what it reads is decided where the run reads it.
    assert (staged / "leak").is_symlink()
