"""compose.yaml runs the secured configuration: every published port on loopback, nats-server with
the written configuration, each service with its own key, and only commands the CLI has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.main import get_command

from shared.ops.cli import app

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return dict(document["services"])


def test_every_published_port_is_on_loopback() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


def test_nats_runs_the_written_secured_configuration() -> None:
    command = services()["nats"]["command"]
    assert command[command.index("-c") + 1] == "/data/bus/nats-server.json"


def test_each_service_connects_with_its_own_key_and_only_checks_the_streams() -> None:
    for name in ("offers", "scheduler", "launcher"):
        environment = services()[name]["environment"]
        assert environment["EB_NATS_NKEY_SEED_FILE"] == f"/data/bus/{name}.nk"
        assert environment["EB_MANAGE_STREAMS"] == "false"
    assert services()["offers"]["environment"]["EB_HTTP_NATS_NKEY_SEED_FILE"] == "/data/bus/http.nk"


def test_every_broker_command_exists() -> None:
    group = get_command(app)
    known = set(group.commands)  # type: ignore[attr-defined]
    for name, service in services().items():
        if "build" in service:
            assert service["command"][0] in known, f"{name} runs an unknown command {service['command']}"
