"""A DiRAC session is submitted once even when the launcher dies between the submit and the saving of
the job id: the launcher records the job's name first, and after a restart finds the job by it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.launcher import store as tables
from services.launcher.driver import Drivers
from services.launcher.platforms.dirac.platform import DiracPlatform
from shared.lifecycle import Phase
from shared.messages import LaunchSession
from shared.platforms.port import LaunchSpec
from tests.fakes.serve import serve_asgi
from tests.fakes.slurmrestd import FakeSlurm
from tests.integration.test_dirac_platform import command_spec, settings
from tests.integration.test_launcher_driver import FakeRuntime, runtime, until

__all__ = ["runtime"]  # the fixture, used by name
COMMAND_KIND = "urn:execution-broker:kinds/executable/local-command"


class LauncherKilled(BaseException):
    """The launcher process dies here: nothing after this line of the driver runs (not an Exception,
    so no handler of the driver's catches it)."""


class DiesAfterSubmit(DiracPlatform):
    """The first start submits the job, then the launcher dies before the job id is committed."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.killed = asyncio.Event()

    async def start(self, spec: LaunchSpec) -> str:
        await super().start(spec)
        self.killed.set()
        raise LauncherKilled


@pytest.fixture
def slurm() -> Any:
    fake = FakeSlurm()
    url, stop = serve_asgi(fake)
    yield fake, url
    stop()


async def launch(runtime: FakeRuntime, session_id: str) -> None:
    now = datetime.now(UTC)
    spec = LaunchSession(
        session_id=session_id,
        owner="alice",
        executable={"kind": COMMAND_KIND, "command": ["echo", "hello"]},
        cores=1,
        memory_gib=1,
        start=now,
        end=now + timedelta(minutes=5),
    ).model_dump(mode="json")
    async with runtime.store.transaction() as tx:
        await tables.insert(tx, tables.Run(session_id, "alice", "dirac", Phase.WAITING, spec, None, None, {}))


async def test_a_launcher_killed_between_submit_and_save_adopts_the_job_after_a_restart(
    runtime: FakeRuntime, tmp_path: Path, slurm: tuple[FakeSlurm, str]
) -> None:
    fake, url = slurm
    await launch(runtime, "s1")
    dying = DiesAfterSubmit(**settings(url))
    doomed = Drivers(runtime, {"dirac": dying}, tmp_path / "sessions")
    doomed.ensure("s1")
    await asyncio.wait_for(dying.killed.wait(), 10)
    await doomed.stop()
    assert len(fake.jobs) == 1  # the submit reached slurmrestd
    run = await tables.read(runtime.store, "s1")
    assert run is not None and run.handle is None  # the job id never reached the store
    assert await tables.start_intent(runtime.store, "s1") == "eb-s1"  # but the intent did

    restarted = Drivers(runtime, {"dirac": DiracPlatform(**settings(url))}, tmp_path / "sessions")
    await restarted.resume_all()
    await until(runtime, "s1", {Phase.COMPLETED, Phase.FAILED})
    await restarted.stop()
    assert [job.name for job in fake.jobs.values()] == ["eb-s1"]  # exactly one job
    run = await tables.read(runtime.store, "s1")
    assert run is not None and run.phase is Phase.COMPLETED
    assert json.loads(run.handle or "{}")["job_id"] == next(iter(fake.jobs))
    assert runtime.phases("s1") == ["PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED"]


async def test_a_job_purged_while_the_launcher_was_down_is_found_in_accounting(
    tmp_path: Path, slurm: tuple[FakeSlurm, str]
) -> None:
    fake, url = slurm
    spec = command_spec(tmp_path)
    first = DiracPlatform(**settings(url))
    handle = await first.start(spec)
    fake.min_job_age_s = 0.0  # slurmctld forgets it as soon as it ends
    await asyncio.sleep(1.0)
    listed = [job for job in fake.jobs.values() if not fake._purged(job)]
    assert listed == []  # gone from slurmctld's list
    name = first.start_name(spec)
    assert await DiracPlatform(**settings(url)).adopt(spec, name) == handle
    # Another session's name finds nothing (the launcher then submits).
    assert await DiracPlatform(**settings(url)).adopt(spec, "eb-someone-else") is None
    await first.aclose()


async def test_a_first_start_submits_without_looking(tmp_path: Path, slurm: tuple[FakeSlurm, str]) -> None:
    fake, url = slurm
    spec = command_spec(tmp_path)
    platform = DiracPlatform(**settings(url))
    assert await platform.adopt(spec, platform.start_name(spec)) is None  # nothing submitted yet
    await platform.start(spec)
    listings = fake.recorded("GET", "*/jobs/")
    assert len(fake.jobs) == 1 and len(listings) == 2  # the two look-ups of adopt, none by start
    await platform.aclose()
