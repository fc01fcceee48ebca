"""The three services as processes with their state in PostgreSQL (``EB_DATABASE_URL``): a session
runs to COMPLETED, driven and read through the HTTP API (whose read model is then a second store on
the offers schema); each service's rows are in a schema of its own, and no SQLite file is made."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.ops.embedded import SERVICES
from tests.e2e.helpers import hello_request
from tests.e2e.http_support import JSON, HttpBroker, start_http_broker, update, wait_for


@pytest.fixture
def http(tmp_path: Path, postgres_url: str) -> Iterator[HttpBroker]:
    started = start_http_broker(tmp_path / "broker", EB_DATABASE_URL=postgres_url)
    try:
        yield started
    finally:
        started.broker.stop()


def test_a_session_runs_to_completed_with_every_service_on_postgres(
    http: HttpBroker, postgres_url: str
) -> None:
    request = hello_request()
    request["schedule"] = {"requested": {"duration": "PT20S"}}  # a short slot: the first starts soon
    with http.client() as alice:
        answer = alice.post("/requests", json=request, headers=JSON)
        assert answer.status_code == 303, answer.text
        offerset = answer.json()
        assert offerset["result"] == "YES", offerset
        session_id = offerset["offers"][0]["meta"]["uuid"]
        assert update(alice, session_id, "ACCEPTED").status_code == 200

        def finished() -> dict[str, Any] | None:
            session: dict[str, Any] = alice.get(f"/sessions/{session_id}", headers=JSON).json()
            return session if session["phase"] in {"COMPLETED", "FAILED", "CANCELLED"} else None

        assert wait_for(finished, 90)["phase"] == "COMPLETED"
        listed = alice.get("/sessions", headers=JSON)
        assert listed.status_code == 200, listed.text
        assert session_id in listed.text

    assert not list(http.broker.data_dir.rglob("*.sqlite")), "a service kept its state in SQLite"
    with psycopg.connect(postgres_url) as db:

        def rows(query: str, *params: str) -> list[tuple[Any, ...]]:
            return db.execute(query, params).fetchall()

        assert set(SERVICES) <= {
            name for (name,) in rows("SELECT schema_name FROM information_schema.schemata")
        }
        assert rows("SELECT phase FROM offers.sessions WHERE session_id = %s", session_id) == [("COMPLETED",)]
        assert rows("SELECT state FROM scheduler.reservations WHERE session_id = %s", session_id) == [
            ("ended",)
        ]
        assert rows("SELECT phase FROM launcher.runs WHERE session_id = %s", session_id) == [("COMPLETED",)]
        # Every service's outbox reached the stream (the relay marks what the stream confirmed).
        wait_for(
            lambda: all(rows(f"SELECT 1 FROM {s}.outbox WHERE sent_at IS NULL") == [] for s in SERVICES), 10
        )
