"""`broker up` as a person runs it: the secured broker in one terminal, and `broker submit` in
another with no credentials given, found through the context `broker up` wrote."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.ops.embedded import free_port
from tests.e2e.helpers import HELLO_REQUEST, ROOT, cli_env, json_documents, run_cli


@dataclass
class Up:
    process: subprocess.Popen[str]
    config_home: Path
    data_dir: Path
    output: Path


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    config_home = tmp_path / "config"
    data_dir = tmp_path / "data"
    output = tmp_path / "up.out"
    env = cli_env(XDG_CONFIG_HOME=str(config_home), EB_POOL_CORES="4", EB_POOL_MEMORY_GIB="16")
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.ops.cli", "up", "--data-dir", str(data_dir),
             "--nats-port", str(free_port()), "--http-port", "0"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
    running = Up(process, config_home, data_dir, output)
    try:
        deadline = time.monotonic() + 90
        while "your context" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        yield running
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_the_person_who_ran_broker_up_submits_from_another_terminal_with_no_extra_step(up: Up) -> None:
    context = up.config_home / "execution-broker" / "context" / "local.json"
    assert context.stat().st_mode & 0o777 == 0o600
    assert json.loads(context.read_text())["url"].startswith("nats://127.0.0.1:")
    done = run_cli(
        "submit", str(HELLO_REQUEST), "--accept", "first", "--watch", "--json",
        timeout=120, XDG_CONFIG_HOME=str(up.config_home),
    )
    assert done.returncode == 0, done.stderr
    events = json_documents(done.stdout)
    assert events[-1]["phase"] == "COMPLETED"
    # Anyone else gets nothing without credentials of their own.
    stranger = run_cli("submit", str(HELLO_REQUEST), XDG_CONFIG_HOME=str(up.config_home / "elsewhere"))
    assert stranger.returncode == 2
    assert "no credentials" in stranger.stderr
    wrong = run_cli(
        "submit", str(HELLO_REQUEST), "--nats-url", json.loads(context.read_text())["url"],
        EB_NATS_USER="mallory", EB_NATS_PASSWORD="guess", XDG_CONFIG_HOME=str(up.config_home / "elsewhere"),
    )
    assert wrong.returncode == 1
    assert "refused user mallory" in wrong.stderr
