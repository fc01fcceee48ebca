"""The package as a user gets it: the wheel built from this checkout, installed (not editable) in a new
virtual environment with its dependencies from the package index, run from a directory outside the
checkout. Acceptance of issue 11: `pip install` of the wheel, then `broker demo` reaches COMPLETED."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from shared.examples import NAMES
from shared.ops.embedded import free_port
from tests.asyncapi_schema import problems
from tests.e2e.helpers import HAPPY_PHASES, ROOT

# Building, installing (pip's cache makes a second install quick; a cold one downloads ~150 MB) and
# one demo: each step has its own bound below, the whole module this one.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

# What the build must not see: local state of the checkout, not part of the source distribution.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    ".schemathesis", "test-output", ".broker-data", ".data",
)


@dataclass(frozen=True)
class Installed:
    """A new virtual environment holding the installed wheel, and a working directory outside the
    checkout for the commands run in it."""

    venv: Path
    cwd: Path

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def env(self, **extra: str) -> dict[str, str]:
        # Nothing may lead Python back to the checkout: no PYTHONPATH, the venv's own bin first.
        drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "EB_NATS_URL"}
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
            NO_COLOR="1",
            COLUMNS="400",
            TMPDIR=str(self.cwd),
        )
        env.update(extra)
        return env

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """One command of the installed package (`broker ...` or `python ...`), outside the checkout."""
        return subprocess.run(
            [str(self.bin(args[0])), *args[1:]],
            cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=timeout, check=False,
        )


def checked(
    command: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd
    )
    tail = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{tail}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    top = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build leaves build/ behind, whose stale files a later wheel would ship.
    source = top / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    wheels = top / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels), str(source)]
    checked(build, 300)
    (wheel,) = wheels.glob("execution_broker-*.whl")

    venv = top / "venv"
    checked([sys.executable, "-m", "venv", str(venv)], 120)
    cwd = top / "elsewhere"
    cwd.mkdir()
    env = Installed(venv, cwd).env()
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)]
    checked(install, 900, env=env, cwd=cwd)
    yield Installed(venv, cwd)
    # A few hundred MB; pytest would keep the last three runs of it.
    shutil.rmtree(top, ignore_errors=True)


def site_packages(installed: Installed) -> Path:
    script = "import sysconfig; print(sysconfig.get_path('purelib'))"
    result = installed.run("python", "-c", script, timeout=30)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip()).resolve()


def test_the_examples_load_from_the_installed_package(installed: Installed) -> None:
    script = (
        "import json, shared, services; from shared.examples import NAMES, example; "
        "print(json.dumps({'shared': shared.__file__, 'services': services.__file__, "
        "'examples': {n: example(n).read_text(encoding='utf-8') for n in NAMES}}))"
    )
    result = installed.run("python", "-c", script, timeout=60)
    assert result.returncode == 0, result.stderr
    found = yaml.safe_load(result.stdout)  # JSON is YAML
    purelib = site_packages(installed)
    for package in ("shared", "services"):
        assert Path(found[package]).resolve().is_relative_to(purelib), found[package]
    # Every shipped example is in the wheel, byte for byte the checkout's.
    assert set(found["examples"]) == set(NAMES)
    for name, text in found["examples"].items():
        assert text == (ROOT / "shared" / "examples" / name).read_text(encoding="utf-8"), name


def test_broker_demo_reaches_completed_and_serves_the_dashboard(installed: Installed) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [str(installed.bin("broker")), "demo", "--http-port", str(port)],
        cwd=installed.cwd, env=installed.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert demo.stdout is not None
    try:
        lines: list[str] = []
        for line in demo.stdout:
            lines.append(line)
            if "dashboard and HTTP API at" in line:
                break
        assert "dashboard and HTTP API at" in "".join(lines), "".join(lines)
        # The dashboard is served until the demo's last step, which comes after a notebook has run.
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as client:
            for path in ("/", "/static/app.js", "/static/app.css"):
                assert client.get(path).status_code == 200, path
            example = client.get("/dashboard/example")
        assert example.status_code == 200, example.text
        # The dashboard's example is the packaged one: its notebook lies next to it in site-packages.
        location = Path(yaml.safe_load(example.text)["executable"]["location"])
        assert location.resolve().is_relative_to(site_packages(installed)), location
        lines.extend(demo.stdout)
        assert demo.wait(timeout=60) == 0, "".join(lines)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(lines)
    phases = re.findall(r"^\s+\d+\.\d s\s+([A-Z]+)\s*$", output, flags=re.MULTILINE)
    assert tuple(phases) == HAPPY_PHASES, output
    assert "demo finished: COMPLETED" in output


def test_broker_asyncapi_of_the_installed_package_validates(
    installed: Installed, asyncapi_validator: Draft7Validator
) -> None:
    # The services' wiring tables are found through the installed package's entry points alone.
    printed = installed.run("broker", "asyncapi", timeout=60)
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    assert problems(asyncapi_validator, document) == []
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"eb.requests.{owner}.{request_id}", "eb.sessions.{owner}.{session_id}.{phase}"} <= addresses
