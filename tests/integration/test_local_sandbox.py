"""The local platform inside bwrap: the platform contract for notebooks, and what a run can see.

Inside its own pid namespace the kernel's pid means nothing to the launcher, so these tests find a
run's processes the way the sandbox leaves them findable: by their working folder, the work dir.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from services.launcher.platforms.local.platform import LocalPlatform
from shared.models import LOCAL_COMMAND_KIND
from shared.platforms.contract import PlatformContract, PlatformFactory, launch, wait_for_final
from shared.platforms.port import LaunchSpec, Platform, RunState
from tests.integration.test_local_platform import NOTEBOOKS, RUN_TIMEOUT, make_spec, notebook_spec


def processes_in(work_dir: Path) -> list[int]:
    """Live processes whose working folder is ``work_dir`` (every process of a run starts there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == work_dir:
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state not in ("Z", "X"):
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


class TestSandboxedLocalPlatformContract(PlatformContract):
    run_timeout = RUN_TIMEOUT

    @pytest.fixture
    def platform_factory(self, bwrap: str, tmp_path: Path) -> PlatformFactory:
        def make() -> LocalPlatform:
            return LocalPlatform(allowed_paths=[NOTEBOOKS], hidden_paths=[tmp_path / "hidden"])

        return make

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
        # HOME is the work dir, so the kernel's IPython profile appears there once it runs.
        profile = spec.work_dir / ".ipython" / "profile_default"
        deadline = time.monotonic() + RUN_TIMEOUT
        while not profile.is_dir():
            assert (await platform.poll(spec, handle)).state == RunState.RUNNING
            assert time.monotonic() < deadline, "the kernel never started"
            await asyncio.sleep(0.05)
        assert not (spec.work_dir / "kernel.json").exists()  # a namespaced pid is never recorded

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        for _ in range(100):  # the namespace's last processes are reaped by the kernel
            if not processes_in(spec.work_dir):
                break
            await asyncio.sleep(0.05)
        assert processes_in(spec.work_dir) == []


async def test_a_sandboxed_command_writes_only_its_work_dir_and_sees_no_hidden_folder(
    bwrap: str, tmp_path: Path
) -> None:
    hidden = tmp_path / "data"
    hidden.mkdir()
    (hidden / "offers.sqlite").write_text("the broker's")
    outside = tmp_path / "outside.txt"
    script = (
        f"ls -A {hidden}; cat {hidden}/offers.sqlite; echo x > {outside}; echo mine > written.txt; "
        "echo $$; ls /proc | grep -c '^[0-9]'"
    )
    spec = make_spec(tmp_path, {"kind": LOCAL_COMMAND_KIND, "command": ["sh", "-c", script]})
    platform = LocalPlatform(allowed_paths=[], hidden_paths=[hidden])
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    log = (spec.work_dir / "command.log").read_text()
    assert status.state == RunState.SUCCEEDED, log
    assert "the broker's" not in log and "No such file or directory" in log
    assert "Read-only file system" in log and not outside.exists()
    assert (spec.work_dir / "written.txt").read_text() == "mine\n"
    *_, pid, processes = log.split()
    assert int(pid) < 10 and int(processes) < 10  # its own pid namespace: none of the host's processes


async def test_a_sandboxed_run_gets_the_python_it_asks_for(bwrap: str, tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path, {"kind": LOCAL_COMMAND_KIND, "command": [sys.executable, "-c", "print('hi from python')"]}
    )
    platform = LocalPlatform()
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    assert (spec.work_dir / "command.log").read_text() == "hi from python\n"
