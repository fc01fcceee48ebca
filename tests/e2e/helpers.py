"""Small helpers shared by the end-to-end tests (no fixtures here: those live in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats

from shared import subjects
from shared.client import read_request_file
from shared.models import JUPYTER_NOTEBOOK_KIND, SIMPLE_COMPUTE_KIND

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


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `broker` subprocess; EB_NATS_URL is dropped so only --nats-url counts."""
    env = {k: v for k, v in os.environ.items() if k != "EB_NATS_URL"}
    env.update({"PYTHONUNBUFFERED": "1", "NO_COLOR": "1"})
    env.update(extra)
    return env


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


async def phase_event_counts(nats_url: str, session_id: str) -> dict[str, int]:
    """How many messages the events stream stores per phase of one session, read from the server."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(
            subjects.EVENTS_STREAM, subjects_filter=subjects.session_events(session_id=session_id)
        )
    finally:
        await nc.close()
    stored = info.state.subjects or {}
    return {subject.rsplit(".", 1)[-1]: count for subject, count in stored.items()}
