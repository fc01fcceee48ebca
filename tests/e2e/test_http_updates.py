"""Updates over HTTP answer with their effect (issue 17): once the offers service has decided, the
answer is the session in its new phase — a cancel's answer shows CANCELLED, every time, whether the
session was offered, just accepted or already launching — and `/direct` answers the session
accepted. A refused update answers with its reason and the updates legal now; an update the
services do not decide in time answers 504 within its deadline, and is applied once they are back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared import iso8601
from shared.client import BrokerClient, BrokerTimeout
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND
from tests.e2e.http_support import JSON, HttpBroker, start_http_broker, update, wait_for
from tests.schema_validation import requires_schemas, validate_against

#: The phases of an accepted session, from ACCEPTED on (`/direct` may answer any of them).
ACCEPTED_PATH = {"ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED"}
RUNS = 100


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    running = start_http_broker(tmp_path_factory.mktemp("http-updates"), EB_HTTP_UPDATE_TIMEOUT_S="20")
    try:
        yield running
    finally:
        running.broker.stop()


def command(argv: list[str], *, later: bool = False) -> dict[str, Any]:
    """A local command for one core; ``later``: its start window half an hour from now (it waits)."""
    requested: dict[str, str] = {"duration": "PT1M"}
    if later:
        requested["start"] = iso8601.format_instant(datetime.now(UTC) + timedelta(minutes=30)) + "/PT1M"
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": argv},
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": requested},
    }


def offers_of(client: httpx.Client, request: dict[str, Any]) -> list[str]:
    answer = client.post("/requests", json=request, headers={**JSON, "Prefer": "return=representation"})
    assert answer.status_code == 200, answer.text
    offerset = answer.json()
    assert offerset["result"] == "YES", offerset
    return [offer["meta"]["uuid"] for offer in offerset["offers"]]


def answered(response: httpx.Response, phase: str) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    session: dict[str, Any] = response.json()
    assert session["phase"] == phase, session
    return session


@requires_schemas
def test_a_cancels_answer_shows_cancelled_every_time(http: HttpBroker) -> None:
    cancels_answer_cancelled(http)


@requires_schemas
def test_a_cancels_answer_shows_cancelled_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The same where the read model is another connection to PostgreSQL, not the service's file."""
    http = start_http_broker(tmp_path / "broker", EB_DATABASE_URL=postgres_url)
    try:
        cancels_answer_cancelled(http)
    finally:
        http.broker.stop()


def cancels_answer_cancelled(http: HttpBroker) -> None:
    """RUNS times: an offer cancelled, then its sibling accepted and cancelled at once (while it is
    booked, preparing or running): each answer shows CANCELLED, and so does a read afterwards."""
    with http.client() as alice:
        for run in range(RUNS):
            offers = offers_of(alice, command(["sleep", "30"]))
            assert len(offers) >= 2, offers
            # An offer: cancelled by the offers service itself.
            offered = answered(update(alice, offers[1], "CANCELLED"), "CANCELLED")
            # An accepted session, on its way to run: the answer waits for the launcher to end it.
            accepted = update(alice, offers[0], "ACCEPTED")
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["phase"] in ACCEPTED_PATH - {"COMPLETED"}, (run, accepted.json())
            cancelled = answered(update(alice, offers[0], "CANCELLED"), "CANCELLED")
            assert "options" not in cancelled["meta"], cancelled  # nothing is legal any more
            # What the answer said is what a read says afterwards.
            assert alice.get(f"/sessions/{offers[0]}", headers=JSON).json()["phase"] == "CANCELLED"
            if run % 25 == 0:
                validate_against("ScheduledExecutionSession", offered)
                validate_against("ScheduledExecutionSession", cancelled)


@requires_schemas
def test_direct_answers_the_session_accepted(http: HttpBroker) -> None:
    with http.client() as alice:
        for prefer in ({}, {"Prefer": "return=representation"}):
            answer = alice.post("/direct", json=command(["sleep", "30"]), headers={**JSON, **prefer})
            assert answer.status_code == (200 if prefer else 303), answer.text
            session = answer.json()
            assert session["phase"] in ACCEPTED_PATH, session
            assert session["meta"]["options"] == [
                {"kind": "uri:enum-value-option", "path": "phase", "values": ["CANCELLED"]}
            ]
            validate_against("ScheduledExecutionSession", session)
            answered(update(alice, session["meta"]["uuid"], "CANCELLED"), "CANCELLED")


def test_a_refused_update_answers_why_and_what_is_legal(http: HttpBroker) -> None:
    with http.client() as alice:
        offers = offers_of(alice, command(["true"], later=True))
        answered(update(alice, offers[0], "REJECTED"), "REJECTED")
        refused = update(alice, offers[0], "ACCEPTED")
        assert refused.status_code == 409, refused.text
        (message,) = refused.json()["messages"]
        assert message["kind"] == "urn:illegal-transition"
        assert f"Session {offers[0]} is REJECTED: it cannot become ACCEPTED" in message["message"]
        assert "legal updates now: none" in message["message"]
        assert "options" not in refused.json()  # none is legal

        accepted = update(alice, offers[1], "ACCEPTED")
        assert accepted.json()["phase"] in ACCEPTED_PATH, accepted.text
        refused = update(alice, offers[1], "REJECTED")
        assert refused.status_code == 409, refused.text
        assert "legal updates now: CANCELLED" in refused.json()["messages"][0]["message"]
        assert refused.json()["options"] == [
            {"kind": "uri:enum-value-option", "path": "phase", "values": ["CANCELLED"]}
        ]
        answered(update(alice, offers[1], "CANCELLED"), "CANCELLED")


def test_an_update_the_services_do_not_decide_answers_504_within_its_deadline(tmp_path: Path) -> None:
    deadline_s = 3.0
    http = start_http_broker(tmp_path / "broker", EB_HTTP_UPDATE_TIMEOUT_S=f"{deadline_s:g}")
    try:
        with http.client() as alice:
            offers = offers_of(alice, command(["true"], later=True))
            assert update(alice, offers[0], "ACCEPTED").status_code == 200
            # The launcher ends a cancelled session: without it, the cancel is never decided.
            http.broker.process("launcher").kill()
            began = time.monotonic()
            late = update(alice, offers[0], "CANCELLED")
            took = time.monotonic() - began
            assert late.status_code == 504, late.text
            assert deadline_s <= took < deadline_s + 5, took
            (message,) = late.json()["messages"]
            assert message["kind"] == "urn:timeout"
            assert message["message"] == (
                f"No decision on the update of session {offers[0]} to CANCELLED within 3 s: the "
                "broker's services did not answer in time. The update may still be applied: read the "
                "session again before retrying"
            )
            # Back, the launcher ends the session: the cancel was taken, as the message said.
            http.broker.process("launcher").start()

            def cancelled() -> bool:
                return bool(alice.get(f"/sessions/{offers[0]}", headers=JSON).json()["phase"] == "CANCELLED")

            wait_for(cancelled, 60)

        # The client's own deadline, with the offers service itself gone (the HTTP API with it).
        credentials = http.broker.login("carol")
        http.broker.process("offers").kill()

        async def cancel() -> None:
            async with BrokerClient(http.broker.url, credentials) as carol:
                await carol.cancel(offers[1], timeout=deadline_s)

        began = time.monotonic()
        with pytest.raises(BrokerTimeout) as timeout:
            asyncio.run(cancel())
        assert deadline_s <= time.monotonic() - began < deadline_s + 5
        assert str(timeout.value).startswith(
            f"no decision on the update of session {offers[1]} to CANCELLED within 3 s"
        )
    finally:
        http.broker.stop()
