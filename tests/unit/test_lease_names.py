"""How a leased connection names its process, and the lease's lock key (`shared.bus.lease`)."""

from __future__ import annotations

import os
import socket
from zlib import crc32

import pytest

from shared.bus.lease import Holder, holder_name, lease_key, parse_holder


def test_a_holder_name_carries_this_process_and_reads_back() -> None:
    name = holder_name("scheduler")
    assert name.startswith(f"eb-scheduler:{os.getpid()}@")
    host = socket.gethostname()
    assert parse_holder(name) == Holder(os.getpid(), host) or len(name.encode()) == 63


def test_a_long_host_is_cut_never_the_process_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "h" * 200)
    name = holder_name("launcher")
    assert len(name.encode()) == 63
    holder = parse_holder(name)
    assert holder is not None and holder.pid == os.getpid() and set(holder.host) == {"h"}


@pytest.mark.parametrize("other", ["eb-offers", "psql", "eb-svc:abc@host", "eb-svc:12", ""])
def test_other_sessions_name_no_holder(other: str) -> None:
    assert parse_holder(other) is None


def test_the_lease_key_differs_from_the_schema_creation_lock() -> None:
    assert lease_key("scheduler") != crc32(b"scheduler")
    assert lease_key("scheduler") != lease_key("launcher")
    assert 0 <= lease_key("scheduler") < 2**32  # one 32-bit half of the key: classid stays 0
