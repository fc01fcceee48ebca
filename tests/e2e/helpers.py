"""Small helpers shared by the end-to-end tests (no fixtures here: those live in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from shared import subjects
from shared.client import BrokerClient, read_request_file
from shared.lifecycle import Phase
from shared.models import JUPYTER_NOTEBOOK_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "shared" / "examples"
HELLO_REQUEST = EXAMPLES / "hello-notebook.yaml"
NOTEBOOKS = ROOT / "tests" / "data" / "notebooks"

# The phases of a session that runs to its end, in the order they happen.
HAPPY_PHASES = ("ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED")


def hello_request() -> dict[str, Any]:
    """The example request, with its notebook location made absolute as the CLI does."""
    return read_request_file(HELLO_REQUEST)


def notebook_request(notebook: Path, *, cores: int = 1, memory: int = 1, duration: str = "PT2M",
                     start: str | None = None) -> dict[str, Any]:
    requested: dict[str, str] = {"duration": duration}
    if start is not None:
        requested["start"] = start
    return {
        "executable": {"kind": JUPYTER_NOTEBOOK_KIND, "meta": {"name": notebook.stem},
                       "location": str(notebook.resolve())},
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": {"min": cores, "max": cores},
                    "memory": {"min": memory, "max": memory}},
        "schedule": {"requested": requested},
    }


def one_core_request(
    executable: dict[str, Any], *, data: list[dict[str, Any]] | None = None, duration: str = "PT5M"
) -> dict[str, Any]:
    """A request for one core and 1 GiB that runs `executable` (with `data`, if any)."""
    document: dict[str, Any] = {
        "executable": executable,
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": duration}},
    }
    if data is not None:
        document["data"] = data
    return document


#: What a `broker` subprocess must not inherit from whoever runs the tests: only the test's own
#: options, credentials and contexts count.
CLIENT_ENV = ("EB_NATS_URL", "EB_NATS_USER", "EB_NATS_PASSWORD", "EB_NATS_TOKEN", "EB_CONTEXT")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `broker` subprocess: none of the caller's client settings, and a
    configuration folder of the test session's own (so no developer's context is read or written)."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    env.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    env.setdefault("XDG_CONFIG_HOME", str(Path(tempfile.gettempdir()) / "eb-tests-config"))
    env.update(extra)
    return env


def login_env(broker: EmbeddedBroker, username: str) -> dict[str, str]:
    """``EB_NATS_USER``/``EB_NATS_PASSWORD`` of a local identity of `broker` (made if new)."""
    credentials = broker.login(username)
    assert credentials.user is not None and credentials.password is not None
    return {"EB_NATS_USER": credentials.user, "EB_NATS_PASSWORD": credentials.password.get_secret_value()}


def run_cli(
    *args: str, timeout: float = 60, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `broker ARGS` as a separate process (python -m shared.ops.cli, as the console script does)."""
    return subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", *args],
        cwd=ROOT, env=cli_env(**env), input=stdin, capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def json_documents(text: str) -> list[Any]:
    """Every JSON document in `text`, in order (the CLI prints one indented document per event)."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return documents
        document, index = decoder.raw_decode(text, index)
        documents.append(document)


async def phase_event_counts(broker: EmbeddedBroker, session_id: str) -> dict[str, int]:
    """How many messages the events stream stores per phase of one session, read from the server
    as the operator (a user may not read stream state)."""
    nc = await nats.connect(broker.url, **broker.operator().connect_options())
    try:
        info = await nc.jetstream().stream_info(
            subjects.EVENTS_STREAM, subjects_filter=subjects.session_events(session_id=session_id)
        )
    finally:
        await nc.close()
    stored = info.state.subjects or {}
    return {subject.rsplit(".", 1)[-1]: count for subject, count in stored.items()}


async def offered_session(client: BrokerClient, request: dict[str, Any]) -> str:
    """Submit `request`, which must be answered YES; the session id of its first offer."""
    offerset = await client.submit(request)
    assert offerset.result == "YES", offerset.meta
    assert offerset.offers and offerset.offers[0].meta
    session_id = offerset.offers[0].meta.uuid
    assert session_id is not None
    return session_id


@dataclass
class Followed:
    """An accepted session whose phases a task collects as they come (`follow_until_running`)."""

    session_id: str
    seen: list[str]
    follower: asyncio.Task[None]


async def follow_until_running(
    client: BrokerClient, request: dict[str, Any], timeout: float = 30
) -> Followed:
    """Submit ``request``, accept its first offer and follow its phases until it is RUNNING."""
    session_id = await offered_session(client, request)
    assert (await client.accept(session_id)).applied
    seen: list[str] = []

    async def follow() -> None:
        async for event in client.events(session_id, until_done=True):
            seen.append(event.phase)

    follower = asyncio.create_task(follow())
    deadline = asyncio.get_running_loop().time() + timeout
    while Phase.RUNNING.value not in seen:
        assert asyncio.get_running_loop().time() < deadline, seen
        await asyncio.sleep(0.1)
    return Followed(session_id, seen, follower)
