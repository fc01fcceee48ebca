"""A platform plugin from another distribution gets offers and runs sessions with no change to this
project: the test writes a tiny distribution (a pyproject.toml with an `execution_broker.platforms`
entry point and one module), installs it with pip into a folder of its own (never into this
environment), and starts the broker with that folder on the services' PYTHONPATH. The plugin's own
tests are the contract suite this package ships, run here against the installed plugin."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.client import BrokerClient
from shared.models import LOCAL_COMMAND_KIND, S3_DATA_KIND, SINGULARITY_CONTAINER_KIND
from shared.ops.embedded import EmbeddedBroker
from shared.platforms.contract import PlatformContract, PlatformFactory
from shared.platforms.port import LaunchSpec
from shared.platforms.registry import InvalidPlugin, capabilities, load_platform
from tests.e2e.helpers import one_core_request

PYPROJECT = """
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "eb-toy-platform"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["execution-broker"]

[project.entry-points."execution_broker.platforms"]
toy = "toy_platform:ToyPlatform"
toy-unfinished = "toy_platform:Unfinished"

[tool.setuptools]
py-modules = ["toy_platform"]
"""

# Implements the Platform Protocol without PlatformBase: everything the launcher calls is written out.
# A run is a timer kept in a file of the work dir, so a new instance finds it again.
PLUGIN = '''
"""A toy platform: `toy:<seconds>` succeeds after that long, `toy:fail` fails at once."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

from shared.models import S3_DATA_KIND, SINGULARITY_CONTAINER_KIND
from shared.platforms.port import LaunchSpec, PlatformError, RunState, RunStatus

RUN_FILE = "toy-run.json"
OUTPUT_FILE = "toy-output.txt"


class ToyPlatform:
    name = "toy"
    executable_kinds: ClassVar[frozenset[str]] = frozenset({SINGULARITY_CONTAINER_KIND})
    data_kinds: ClassVar[frozenset[str]] = frozenset({S3_DATA_KIND})

    def __init__(self, **settings: Any) -> None:
        pass

    async def prepare(self, spec: LaunchSpec) -> None:
        location = str(spec.executable.get("location", ""))
        if spec.executable_kind not in self.executable_kinds or not location.startswith("toy:"):
            raise PlatformError(f"the toy platform cannot run {location!r}")
        spec.work_dir.mkdir(parents=True, exist_ok=True)

    async def prepare_storage(self, spec: LaunchSpec, storage: dict[str, Any]) -> None:
        return None

    async def prepare_data(self, spec: LaunchSpec, data: dict[str, Any]) -> None:
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        with (spec.work_dir / "toy-staged.txt").open("a") as staged:
            staged.write(f"{data['bucket']}/{data['object']}\\n")

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        return 1.0

    async def start(self, spec: LaunchSpec) -> str:
        what = str(spec.executable["location"]).removeprefix("toy:")
        fails = what == "fail"
        run = {"ends": time.time() + (0.0 if fails else float(what)), "fails": fails, "cancelled": False}
        (spec.work_dir / RUN_FILE).write_text(json.dumps(run))
        return json.dumps({"toy": spec.session_id})

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        run = json.loads((spec.work_dir / RUN_FILE).read_text())
        if run["cancelled"]:
            return RunStatus(state=RunState.CANCELLED, message="cancelled on the toy platform")
        if time.time() < run["ends"]:
            return RunStatus(state=RunState.RUNNING)
        if run["fails"]:
            return RunStatus(state=RunState.FAILED, message="the toy run failed, as asked")
        output = spec.work_dir / OUTPUT_FILE
        if not output.exists():
            staged = spec.work_dir / "toy-staged.txt"
            output.write_text("staged: " + (staged.read_text() if staged.exists() else "nothing\\n"))
        return RunStatus(state=RunState.SUCCEEDED, outputs={"output": str(output)})

    async def cancel(self, spec: LaunchSpec, handle: str) -> None:
        run = json.loads((spec.work_dir / RUN_FILE).read_text())
        if time.time() < run["ends"] and not run["cancelled"]:
            run |= {"cancelled": True, "ends": time.time()}
            (spec.work_dir / RUN_FILE).write_text(json.dumps(run))

    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        return None

    def poll_interval(self, spec: LaunchSpec) -> float:
        return 0.05

    def exited(self, spec: LaunchSpec, handle: str) -> asyncio.Future[None] | None:
        return None  # a timer cannot be watched: the launcher polls

    async def aclose(self) -> None:
        return None


class Unfinished:
    """Declares what it runs but implements none of the port."""

    name = "toy-unfinished"
    executable_kinds: ClassVar[frozenset[str]] = frozenset({SINGULARITY_CONTAINER_KIND})
    data_kinds: ClassVar[frozenset[str]] = frozenset()
'''


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy distribution, built and installed by pip into a folder of its own."""
    root = tmp_path_factory.mktemp("toy")
    source = root / "source"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "toy_platform.py").write_text(PLUGIN)
    site = root / "site"
    # Offline and into `site` only: no index, no dependencies, the build backend of this environment.
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    command += ["--no-build-isolation", "--target", str(site), str(source)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (site / "toy_platform.py").is_file()
    return site


@pytest.fixture
def with_toy_site(toy_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy folder on this process's path, as it is on the services' (undone after the test)."""
    monkeypatch.syspath_prepend(str(toy_site))
    return toy_site


def test_the_toy_plugin_is_not_installed_here(toy_site: Path) -> None:
    # The environment the tests run in is left alone: the plugin exists only in its own folder.
    done = subprocess.run(
        [sys.executable, "-c", "import importlib.util; print(importlib.util.find_spec('toy_platform'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "None"


def test_the_registry_finds_what_the_installed_toy_declares(with_toy_site: Path) -> None:
    declared = capabilities("toy")
    assert declared.executable_kinds == {SINGULARITY_CONTAINER_KIND}
    assert declared.data_kinds == {S3_DATA_KIND}


def test_a_plugin_that_does_not_implement_the_port_is_refused_with_what_it_lacks(with_toy_site: Path) -> None:
    assert capabilities("toy-unfinished").executable_kinds == {SINGULARITY_CONTAINER_KIND}
    with pytest.raises(
        InvalidPlugin, match=r"'toy-unfinished' \(toy_platform:Unfinished\) does not implement"
    ):
        load_platform("toy-unfinished")
    with pytest.raises(
        InvalidPlugin,
        match=r"missing: aclose, cancel, exited, poll, poll_interval, preparation_estimate, prepare, ",
    ):
        load_platform("toy-unfinished")


# -- the shipped contract suite, run against the installed toy --------------------------------------


def toy_spec(work_dir: Path, location: str, data: list[dict[str, Any]] | None = None) -> LaunchSpec:
    return LaunchSpec(
        session_id=work_dir.name,
        executable={"kind": SINGULARITY_CONTAINER_KIND, "location": location},
        cores=1,
        memory_gib=1,
        slot_end=datetime.now(UTC) + timedelta(minutes=10),
        work_dir=work_dir,
        data=data or [],
    )


def s3(name: str) -> dict[str, Any]:
    return {
        "kind": S3_DATA_KIND,
        "meta": {"name": name},
        "endpoint": "https://s3.toys.example.org",
        "template": "https://{bucket}.s3.toys.example.org/{object}",
        "bucket": "toys",
        "object": name,
    }


class TestToyPlatformContract(PlatformContract):
    run_timeout = 20.0

    @pytest.fixture
    def platform_factory(self, with_toy_site: Path) -> PlatformFactory:
        return lambda: load_platform("toy")

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        return toy_spec(tmp_path / "good", "toy:0.2", [s3("cube")])

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        return toy_spec(tmp_path / "failing", "toy:fail")

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        return toy_spec(tmp_path / "slow", "toy:600")


# -- the broker, with the toy folder on its services' path ------------------------------------------

POOLS = """
[[pools]]
name = "here"
platform = "local"
cores = 2
memory_gib = 4
grid_s = 1

[[pools]]
name = "toybox"
platform = "toy"
cores = 2
memory_gib = 4
grid_s = 1
[[pools.costs]]
kind = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/costs/simple-minmax-float-cost.yaml"
type = "urn:toy:cost"
min = 1.0
max = 1.0
"""


@pytest.fixture
def toy_broker(
    broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path, toy_site: Path
) -> EmbeddedBroker:
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS)
    path = os.pathsep.join(p for p in (str(toy_site), os.environ.get("PYTHONPATH")) if p)
    return broker_factory(EB_POOLS=str(pools), PYTHONPATH=path)


async def test_a_plugin_from_another_distribution_gets_offers_and_runs_them(
    toy_broker: EmbeddedBroker,
) -> None:
    async with BrokerClient(toy_broker.url, toy_broker.login("alice")) as client:
        # Only the toy runs a SingularityContainer and stages S3 data: every offer is from its pool.
        toy = await client.submit(
            one_core_request({"kind": SINGULARITY_CONTAINER_KIND, "location": "toy:0.5"}, data=[s3("cube")])
        )
        assert toy.result == "YES", toy.meta
        assert toy.offers
        assert all(offer.costs and offer.costs[0].type == "urn:toy:cost" for offer in toy.offers)

        # The local pool runs the command but stages no S3 data; the toy stages it but runs no
        # command: no pool can, and the answer says why.
        refused = await client.submit(
            one_core_request({"kind": LOCAL_COMMAND_KIND, "command": ["true"]}, data=[s3("cube")])
        )
        assert refused.result == "NO"
        texts = [m.message or "" for m in (refused.meta.messages if refused.meta else None) or []]
        assert texts == [f"Data of kind {S3_DATA_KIND} cannot be staged on platform local"], texts

        # Accepted, the session runs on the toy platform in the launcher, data staged first.
        session_id = toy.offers[0].meta.uuid if toy.offers[0].meta else None
        assert session_id is not None
        assert (await client.accept(session_id)).applied
        events = await client.wait_until_done(session_id, timeout=60)
    assert [e.phase for e in events][-1] == "COMPLETED", [(e.phase, e.messages) for e in events]
    output = Path(events[-1].outputs["output"])
    assert await asyncio.to_thread(output.read_text) == "staged: toys/cube\n"
    assert not toy_broker.dead_services()
