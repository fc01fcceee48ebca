"""The launcher's handlers as units of work: a launch is recorded once and driven only once committed.

Stops and failures of sessions launched or not are in test_phase_owners_handlers.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.launcher import store as tables
from shared import subjects
from shared.bus.store import Transaction
from shared.lifecycle import Phase
from shared.messages import LaunchSession
from shared.subjects import LauncherVerb
from tests.handlers.harness import NOW, OWNER
from tests.handlers.units import TINY, Launcher

LAUNCH = subjects.launcher_command(TINY.name, LauncherVerb.LAUNCH)


def launch(session_id: str, cores: int = 1) -> LaunchSession:
    return LaunchSession(
        session_id=session_id,
        owner=OWNER,
        executable={"kind": "urn:x", "command": ["true"]},
        pool=TINY.name,
        cores=cores,
        memory_gib=1,
        start=NOW,
        end=NOW + timedelta(minutes=1),
    )


async def test_a_launch_is_recorded_once_and_its_driver_started(launcher: Launcher) -> None:
    assert await launcher.deliver(LAUNCH, launch("s1")) == []  # the driver, not the handler, reports
    run = await launcher.run_of("s1")
    assert run is not None
    assert (run.owner, run.platform, run.phase, run.handle, run.cancel_reason) == (
        OWNER,
        "local",
        Phase.WAITING,
        None,
        None,
    )
    assert run.spec == launch("s1").model_dump(mode="json")
    assert launcher.drivers.ensured == ["s1"]
    # A repeated launch keeps the first record (a running driver is left as it is).
    assert await launcher.deliver(LAUNCH, launch("s1", cores=2)) == []
    again = await launcher.run_of("s1")
    assert again is not None and again.spec["cores"] == 1
    assert set(launcher.drivers.ensured) == {"s1"}


async def test_a_launch_rolled_back_starts_no_driver(launcher: Launcher) -> None:
    handler = launcher.handler(LAUNCH)
    msg = launcher.incoming(LAUNCH, launch("s2"))

    async def launch_then_fail(tx: Transaction) -> None:
        await handler(tx, msg)
        raise RuntimeError("a later message of the batch broke the transaction")

    with pytest.raises(RuntimeError, match="later message"):
        await launcher.run(launch_then_fail)
    assert await launcher.run_of("s2") is None
    assert launcher.drivers.ensured == []


async def test_each_launcher_hears_only_its_own_pools_commands(launcher: Launcher) -> None:
    for verb in LauncherVerb:
        assert launcher.consumer(subjects.launcher_command(TINY.name, verb)) is not None
        assert launcher.consumer(subjects.launcher_command("another-pool", verb)) is None


async def test_a_start_intent_is_kept_replaced_and_pruned_with_its_run(launcher: Launcher) -> None:
    assert await launcher.deliver(LAUNCH, launch("s3")) == []
    assert await tables.start_intent(launcher.store, "s3") is None
    await launcher.run(lambda tx: tables.record_start_intent(tx, "s3", "eb-s3"))
    await launcher.run(lambda tx: tables.record_start_intent(tx, "s3", "eb-s3-renamed"))
    assert await tables.start_intent(launcher.store, "s3") == "eb-s3-renamed"
    await launcher.run(lambda tx: tables.set_phase(tx, "s3", Phase.COMPLETED))
    await launcher.run(lambda tx: tables.prune_finished(tx, NOW + timedelta(days=1), 10))
    assert await launcher.run_of("s3") is None
    assert await tables.start_intent(launcher.store, "s3") is None
