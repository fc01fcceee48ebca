"""`POST /sessions/{uuid}` answers with the update's effect whatever the bus and the read model do:
the decided phase even while the read model trails the decision, the refusal with the updates legal
now, and 504 naming the session when no decision comes in time — here with a bus of the test's own
that decides as told (the real services: tests/e2e/test_http_updates.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from services.offers.http import updates
from services.offers.http.app import create_app
from services.offers.http.settings import HttpSettings
from services.offers.store import ReadModel
from shared.auth import owners
from shared.client import BrokerTimeout, update_timeout_message
from shared.lifecycle import Phase
from shared.messages import UpdateResult
from shared.models import MessageItem

SESSION = "3f0e8d52-5d0c-4c8e-9a51-0d7c1b0f6a11"
OWNER = owners.local("admin").token
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
ADMIN = ("admin", "pw")


class DecidingBus:
    """Answers every update with `result`, and runs `then` once it has answered (a read model that
    records the decision only later); `silent`: no answer within the deadline."""

    def __init__(self, result: UpdateResult, then: Callable[[], Any] | None = None, silent: bool = False):
        self.result = result
        self.then = then
        self.silent = silent
        self.timeouts: list[float] = []

    async def submit(self, owner: str, raw: bytes, request_id: str) -> Any:
        raise AssertionError("no request in this test")

    async def update(self, owner: str, session_id: str, phase: Phase, timeout: float) -> UpdateResult:
        assert (owner, session_id) == (OWNER, SESSION)
        self.timeouts.append(timeout)
        if self.silent:
            await asyncio.sleep(timeout)
            raise BrokerTimeout(update_timeout_message(session_id, phase.value, timeout))
        if self.then is not None:
            asyncio.get_running_loop().call_later(0.3, self.then)
        return self.result

    def event_queue(self) -> Any:
        raise AssertionError("no events in this test")

    async def history(self, session_id: str) -> list[Any]:
        return []


async def _set_phase(read_model: ReadModel, phase: Phase) -> None:
    await read_model.conn.execute(
        "UPDATE sessions SET phase = ? WHERE session_id = ?", (phase.value, SESSION)
    )


@contextlib.asynccontextmanager
async def api(
    tmp_path: Path, bus: Callable[[ReadModel], DecidingBus], **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ReadModel]]:
    """The app on a read model holding one ACCEPTED session of the admin's."""
    read_model = ReadModel(tmp_path / "offers.sqlite")
    await read_model.open()
    await read_model.conn.execute(
        "INSERT INTO sessions(session_id, offerset_id, owner, phase, document, trace, updated_at) "
        "VALUES (?, 'os-1', ?, 'ACCEPTED', ?, '{}', '2026-01-01T00:00:00+00:00')",
        (SESSION, OWNER, json.dumps({"meta": {"uuid": SESSION, "created": "2026-01-01T00:00:00Z"}})),
    )
    config = HttpSettings(http_port=1, admin_username=ADMIN[0], admin_password=ADMIN[1], **settings)
    app = create_app(config, read_model, bus(read_model), data_dir=tmp_path)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test", auth=ADMIN
        ) as client:
            yield client, read_model
    finally:
        await read_model.close()


def cancel(client: httpx.AsyncClient) -> Any:
    body = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
    return client.post(f"/sessions/{SESSION}", json=body, headers=JSON)


def cancelled() -> UpdateResult:
    return UpdateResult(session_id=SESSION, update_id="u1", applied=True, phase="CANCELLED")


async def test_the_answer_waits_for_a_read_model_that_trails_the_decision(tmp_path: Path) -> None:
    def trailing(read_model: ReadModel) -> DecidingBus:
        return DecidingBus(
            cancelled(), then=lambda: asyncio.ensure_future(_set_phase(read_model, Phase.CANCELLED))
        )

    async with api(tmp_path, trailing) as (client, _):
        began = time.monotonic()
        answer = await cancel(client)
        assert answer.status_code == 200, answer.text
        assert answer.json()["phase"] == "CANCELLED"
        assert 0.3 <= time.monotonic() - began < updates.READ_MODEL_WAIT_S


async def test_a_read_model_that_never_shows_it_is_answered_in_the_decided_phase(tmp_path: Path) -> None:
    async with api(tmp_path, lambda _: DecidingBus(cancelled())) as (client, _):
        began = time.monotonic()
        answer = await cancel(client)
        assert answer.status_code == 200, answer.text
        session = answer.json()
        assert session["phase"] == "CANCELLED"
        assert "options" not in session["meta"]  # those of CANCELLED (none), not of ACCEPTED
        assert time.monotonic() - began < updates.READ_MODEL_WAIT_S + 1
        # A read shows what the read model holds.
        assert (await client.get(f"/sessions/{SESSION}", headers=JSON)).json()["phase"] == "ACCEPTED"


async def test_a_phase_past_the_decided_one_is_answered_as_it_is(tmp_path: Path) -> None:
    accepted = UpdateResult(session_id=SESSION, update_id="u1", applied=True, phase="ACCEPTED")

    def ahead(read_model: ReadModel) -> DecidingBus:
        return DecidingBus(accepted)

    async with api(tmp_path, ahead) as (client, read_model):
        await _set_phase(read_model, Phase.WAITING)
        body = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
        answer = await client.post(f"/sessions/{SESSION}", json=body, headers=JSON)
        assert answer.json()["phase"] == "WAITING"


async def test_a_refusal_carries_the_updates_legal_now(tmp_path: Path) -> None:
    illegal = MessageItem.error("urn:illegal-transition", "Session is ACCEPTED; legal updates now: CANCELLED")
    refused = UpdateResult(
        session_id=SESSION, update_id="u1", applied=False, phase="ACCEPTED", messages=[illegal]
    )
    async with api(tmp_path, lambda _: DecidingBus(refused)) as (client, _):
        answer = await cancel(client)
        assert answer.status_code == 409
        assert answer.json()["messages"][0]["kind"] == "urn:illegal-transition"
        assert answer.json()["options"] == [
            {"kind": "uri:enum-value-option", "path": "phase", "values": ["CANCELLED"]}
        ]
    forbidden = MessageItem.error("urn:forbidden", "Only the owner of session ${session} may update it")
    foreign = UpdateResult(session_id=SESSION, update_id="u1", applied=False, messages=[forbidden])
    other = tmp_path / "other"
    other.mkdir()
    async with api(other, lambda _: DecidingBus(foreign)) as (client, _):
        answer = await cancel(client)
        assert answer.status_code == 403
        assert "options" not in answer.json()  # the phase of another user's session is not told


async def test_no_decision_in_time_is_a_504_naming_the_session(tmp_path: Path) -> None:
    silent = DecidingBus(cancelled(), silent=True)
    async with api(tmp_path, lambda _: silent, http_update_timeout_s=0.5) as (client, _):
        began = time.monotonic()
        answer = await cancel(client)
        assert 0.5 <= time.monotonic() - began < 2
        assert answer.status_code == 504
        (message,) = answer.json()["messages"]
        assert message["kind"] == "urn:timeout"
        assert message["message"].startswith(
            f"No decision on the update of session {SESSION} to CANCELLED within 0.5 s"
        )
    assert silent.timeouts == [0.5]
