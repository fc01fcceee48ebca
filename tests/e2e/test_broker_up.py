"""`broker up` as a person runs it: the secured broker in one terminal, and `broker submit` in
another with no credentials given, found through the context `broker up` wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest

from shared.auth.credentials import Credentials
from shared.bus.servers import server_urls
from shared.ops.embedded import free_port
from tests.e2e.helpers import HELLO_REQUEST, ROOT, cli_env, json_documents, run_cli


@dataclass
class Up:
    process: subprocess.Popen[str]
    config_home: Path
    data_dir: Path
    output: Path


@contextlib.contextmanager
def broker_up(tmp_path: Path, *options: str) -> Iterator[Up]:
    config_home = tmp_path / "config"
    data_dir = tmp_path / "data"
    output = tmp_path / "up.out"
    env = cli_env(XDG_CONFIG_HOME=str(config_home), EB_POOL_CORES="4", EB_POOL_MEMORY_GIB="16")
    with output.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.ops.cli", "up", "--data-dir", str(data_dir),
             "--nats-port", str(free_port()), "--http-port", "0", *options],
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


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    with broker_up(tmp_path) as running:
        yield running


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


async def _replicas(url: str, operator_seed: Path) -> dict[str, int]:
    """Each stream's and each durable's replicas, as the cluster reports them."""
    nc = await nats.connect(server_urls(url), **Credentials(nkey_seed_file=operator_seed).connect_options())
    try:
        js = nc.jetstream()
        found: dict[str, int] = {}
        for stream in await js.streams_info():
            assert stream.config.name is not None
            found[stream.config.name] = 1 + len(stream.cluster.replicas or []) if stream.cluster else 1
            for consumer in await js.consumers_info(stream.config.name):
                assert consumer.cluster is not None and consumer.name is not None
                found[consumer.name] = 1 + len(consumer.cluster.replicas or [])
        return found
    finally:
        await nc.close()


def test_broker_up_on_a_three_node_cluster_replicates_everything_and_serves_clients(tmp_path: Path) -> None:
    with broker_up(tmp_path, "--cluster", "3") as up:
        url = json.loads((up.config_home / "execution-broker" / "context" / "local.json").read_text())["url"]
        assert len(server_urls(url)) == 3
        replicas = asyncio.run(_replicas(url, up.data_dir / "bus" / "operator.nk"))
        assert set(replicas) >= {"EB_COMMANDS", "EB_EVENTS", "offers-requests", "scheduler-local"}
        assert set(replicas.values()) == {3}, replicas
        secret = up.data_dir / "bus" / "cluster-route.secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        done = run_cli(
            "submit", str(HELLO_REQUEST), "--accept", "first", "--watch", "--json",
            timeout=120, XDG_CONFIG_HOME=str(up.config_home),
        )
        assert done.returncode == 0, done.stderr
        assert json_documents(done.stdout)[-1]["phase"] == "COMPLETED"


def test_broker_up_refuses_a_cluster_that_cannot_lose_a_node() -> None:
    done = run_cli("up", "--cluster", "2")
    assert done.returncode == 2
    assert "odd number of nodes from 3 to 7" in done.stderr
