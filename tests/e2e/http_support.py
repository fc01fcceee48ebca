"""Helpers of the HTTP tests: a broker whose offers service serves the HTTP API on a free port."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from shared.client import wait_for_services
from shared.ops.embedded import SERVICES, EmbeddedBroker, free_port, wait_for_port
from tests.conftest import broker_env

ADMIN = ("admin", "admin-secret")
ALICE = ("alice", "alice-secret")
BOB = ("bob", "bob-secret")
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
YAML = {"Content-Type": "application/yaml", "Accept": "application/yaml"}
UPDATE_KIND = "uri:enum-value-update"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "REJECTED", "EXPIRED"}


@dataclass
class HttpBroker:
    broker: EmbeddedBroker
    base_url: str

    def client(self, auth: tuple[str, str] | None = ALICE, timeout: float = 40.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, auth=auth, timeout=timeout)


def http_env(**extra: str) -> dict[str, str]:
    return {
        "EB_ADMIN_USERNAME": ADMIN[0],
        "EB_ADMIN_PASSWORD": ADMIN[1],
        # Example A asks for 5 to 15 cores and 3 to 9 GiB.
        "EB_POOL_CORES": "16",
        "EB_POOL_MEMORY_GIB": "32",
        **extra,
    }


def start_http_broker(data_dir: Path, **env: str) -> HttpBroker:
    """nats-server + the three services, HTTP on a free port, users alice and bob created."""
    port = free_port()
    broker = EmbeddedBroker(data_dir=data_dir, env=broker_env(**http_env(**env)), http_port=port)
    broker.start()
    try:
        asyncio.run(wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator()))
        wait_for_port(port, 30)
        assert broker.http_url is not None
        http = HttpBroker(broker, broker.http_url)
        with http.client(ADMIN) as admin:
            for username, password in (ALICE, BOB):
                created = admin.post("/admin/identities", json={"username": username, "password": password})
                assert created.status_code == 201, created.text
    except BaseException:
        broker.stop()
        raise
    return http


def update(client: httpx.Client, session_id: str, phase: str, **headers: str) -> httpx.Response:
    body = {"kind": UPDATE_KIND, "path": "phase", "value": phase}
    return client.post(f"/sessions/{session_id}", json=body, headers={**JSON, **headers})


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:.0f} s")
        time.sleep(interval)
