"""Local execution through the whole broker: opt-in per owner, and contained when it runs.

An owner the pool does not allow gets a NO that names the rule; an allowed owner's command sees
none of the broker's variables or files; a command that allocates past its booked memory ends
FAILED saying so. The sandbox needs bwrap (Debian: bubblewrap), installed here when missing as the
browser tests install Chromium.
"""

from __future__ import annotations

import stat
import sys
from collections.abc import Callable

import pytest

from shared.client import BrokerClient
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import EmbeddedBroker
from shared.settings import Settings

CANARY = "EB_CANARY_SECRET"
CANARY_VALUE = "canary-value-that-must-not-leak"


def command(argv: list[str], memory_gib: int = 1) -> dict[str, object]:
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": argv, "environment": {"MINE": "mine"}},
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": memory_gib, "max": memory_gib},
        },
        "schedule": {"requested": {"duration": "PT5M"}},
    }


async def run_to_end(client: BrokerClient, argv: list[str]) -> tuple[str, str, str]:
    """(session id, final phase, final message) of a command run on the first offer."""
    offerset = await client.submit(command(argv))
    assert offerset.result == "YES", offerset.meta.messages
    session_id = (offerset.offers or [])[0].meta.uuid
    assert session_id is not None
    assert (await client.accept(session_id)).applied
    events = await client.wait_until_done(session_id, timeout=60)
    final = events[-1]
    return session_id, final.phase, " ".join(m.message or "" for m in final.messages)


@pytest.fixture
def contained(broker_factory: Callable[..., EmbeddedBroker], bwrap: str) -> EmbeddedBroker:
    # A variable of the broker's own, as a platform token or a password would be.
    return broker_factory(**{CANARY: CANARY_VALUE})


async def test_an_owner_the_pool_does_not_allow_gets_a_no_naming_the_rule(contained: EmbeddedBroker) -> None:
    async with BrokerClient(contained.url, contained.login("mallory")) as client:
        offerset = await client.submit(command(["true"]))
    assert offerset.result == "NO"
    texts = [m.message or "" for m in offerset.meta.messages or []]
    assert any(
        "Pool local runs code on the broker's host only for owners listed in its allowed_owners" in text
        for text in texts
    ), texts
    assert [m.kind for m in offerset.meta.messages or []] == ["urn:not-allowed"]


async def test_a_command_sees_neither_the_brokers_variables_nor_its_files(contained: EmbeddedBroker) -> None:
    data_dir = contained.data_dir.resolve()
    offers_db = data_dir / "offers" / "offers.sqlite"
    assert offers_db.is_file()
    script = f"env; echo ---; cat {offers_db}; echo ---; ls -A {data_dir}; echo ---; exit 1"
    async with BrokerClient(contained.url, contained.login("alice")) as client:
        session_id, phase, message = await run_to_end(client, ["sh", "-c", script])
    assert phase == "FAILED"
    work_dir = Settings(data_dir=data_dir).work_root() / session_id
    # Outside the services' data dir, and private.
    assert data_dir not in work_dir.parents
    assert stat.S_IMODE(work_dir.stat().st_mode) == 0o700
    log = (work_dir / "command.log").read_text()
    environment, cat, listing, _ = log.split("---\n")
    names = {line.split("=", 1)[0] for line in environment.splitlines() if "=" in line}
    assert not {name for name in names if name.startswith(("EB_", "OTEL_", "NATS"))}, names
    assert CANARY_VALUE not in log and CANARY_VALUE not in message
    assert "MINE=mine" in environment and f"HOME={work_dir}" in environment
    assert "No such file or directory" in cat and "SQLite" not in cat  # the data dir is an empty tmpfs
    assert listing == ""
    assert "No such file" in message  # the tail of the log is the FAILED message: nothing of ours in it
    assert "EB_" not in message


async def test_a_command_past_its_booked_memory_ends_failed_saying_so(contained: EmbeddedBroker) -> None:
    allocate = [sys.executable, "-c", "b = bytearray(3 * 2**30)"]
    async with BrokerClient(contained.url, contained.login("alice")) as client:
        _, phase, message = await run_to_end(client, allocate)
    assert phase == "FAILED"
    assert message.startswith("the command exceeded its memory limit of 1 GiB: exit code 1"), message
    assert "MemoryError" in message
