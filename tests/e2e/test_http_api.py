"""The HTTP API against the real services: §4.7 examples in JSON and YAML, the accept/reject flow of
example A to COMPLETED on the local platform, errors with bodies, auth, and the event stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from shared.models import KIND_BASE, load_document
from tests.asyncapi_schema import problems
from tests.e2e.helpers import hello_request
from tests.e2e.http_support import (
    BOB,
    JSON,
    TERMINAL,
    YAML,
    HttpBroker,
    start_http_broker,
    update,
    wait_for,
)
from tests.schema_validation import requires_schemas, validate_against

REQUESTS = sorted((Path(__file__).resolve().parents[1] / "data" / "requests").iterdir())


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    running = start_http_broker(tmp_path_factory.mktemp("http-broker"))
    try:
        yield running
    finally:
        running.broker.stop()


def _body(response: httpx.Response) -> dict[str, Any]:
    document = load_document(response.content, response.headers.get("content-type"))
    assert isinstance(document, dict)
    return document


def _kinds(document: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(document, dict):
        if isinstance(document.get("kind"), str):
            found.add(document["kind"])
        for value in document.values():
            found |= _kinds(value)
    elif isinstance(document, list):
        for item in document:
            found |= _kinds(item)
    return found


@requires_schemas
@pytest.mark.parametrize("path", REQUESTS, ids=[p.name for p in REQUESTS])
@pytest.mark.parametrize("as_yaml", [False, True], ids=["json", "yaml"])
def test_every_example_request_is_accepted_and_answers_validate(
    http: HttpBroker, path: Path, as_yaml: bool
) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    headers = YAML if as_yaml else JSON
    payload = yaml.safe_dump(document) if as_yaml else json.dumps(document)
    with http.client() as client:
        answer = client.post("/requests", content=payload, headers=headers)
        assert answer.status_code == 303, answer.text
        assert answer.headers["content-type"].startswith(headers["Accept"])
        offerset = _body(answer)
        validate_against("OfferSetResponse", offerset)
        location = answer.headers["location"]
        assert location == offerset["meta"]["url"]
        assert location.endswith(f"/offersets/{offerset['meta']['uuid']}")
        # Exact schema 1.0.7 kinds in the answer, whatever alias the request used.
        assert all(k.startswith((KIND_BASE, "uri:", "urn:")) for k in _kinds(offerset)), _kinds(offerset)
        again = client.get(location, headers={"Accept": headers["Accept"]})
        assert again.status_code == 200
        validate_against("OfferSetResponse", _body(again))
        assert offerset["result"] in {"YES", "NO"}
        for offer in offerset.get("offers") or []:
            validate_against("ScheduledExecutionSession", offer)
            assert offer["meta"]["options"] == [
                {
                    "kind": "uri:enum-value-option",
                    "path": "phase",
                    "values": ["ACCEPTED", "CANCELLED", "REJECTED"],
                }
            ]
            # Every component URL resolves.
            for url in [offer["meta"]["url"]] + [
                offer[role]["meta"]["url"] for role in ("executable", "compute") if offer.get(role)
            ]:
                resolved = client.get(url, headers={"Accept": "application/json"})
                assert resolved.status_code == 200, (url, resolved.text)
        if path.name.startswith("example-a"):
            assert offerset["result"] == "YES", offerset["meta"].get("messages")
        for offer in offerset.get("offers") or []:  # free the held capacity for the next example
            assert update(client, offer["meta"]["uuid"], "REJECTED").status_code == 200


@requires_schemas
def test_accept_reject_flow_runs_to_completed(http: HttpBroker) -> None:
    request = hello_request()  # the example notebook, its location made absolute
    # Offers are consecutive slots of the requested duration: a short one lets offer 1 start soon.
    request["schedule"] = {"requested": {"duration": "PT20S"}}
    with http.client() as alice, http.client(BOB) as bob:
        answer = alice.post("/requests", json=request, headers=JSON)
        assert answer.status_code == 303, answer.text
        offerset = answer.json()
        assert offerset["result"] == "YES", offerset
        offers = [o["meta"]["uuid"] for o in offerset["offers"]]
        assert len(offers) >= 2

        # Live events: follow the stream while the flow runs.
        token = alice.post("/events/token", headers=JSON).json()["token"]
        seen: list[dict[str, Any]] = []
        stream_open = threading.Event()

        def follow() -> None:
            with (
                httpx.Client(base_url=http.base_url, timeout=120) as raw,
                raw.stream("GET", "/events", params={"token": token}) as stream,
            ):
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                for line in stream.iter_lines():
                    stream_open.set()
                    if line.startswith("data: "):
                        seen.append(json.loads(line[6:]))
                        if seen[-1]["phase"] == "COMPLETED":
                            return

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert stream_open.wait(10)

        # Another user may neither update nor read it.
        refused = update(bob, offers[1], "ACCEPTED")
        assert refused.status_code == 403, refused.text
        assert refused.json()["messages"][0]["kind"] == "urn:forbidden"
        assert bob.get(f"/sessions/{offers[1]}", headers=JSON).status_code == 403

        rejected = update(alice, offers[0], "REJECTED")
        assert rejected.status_code == 200, rejected.text
        assert rejected.json()["phase"] == "REJECTED"
        assert "options" not in rejected.json()["meta"]
        accepted = update(alice, offers[1], "ACCEPTED")
        assert accepted.status_code == 200, accepted.text
        # The answer is the session as it is now: the scheduler's WAITING (and what follows) may already
        # have reached the read model, never anything but the accepted path.
        assert accepted.json()["phase"] in {"ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING"}
        validate_against("ScheduledExecutionSession", accepted.json())

        # An illegal update: 409, and the message names the legal ones.
        illegal = update(alice, offers[0], "ACCEPTED")
        assert illegal.status_code == 409, illegal.text
        message = illegal.json()["messages"][0]
        assert message["kind"] == "urn:illegal-transition"
        assert "legal updates now" in message["message"]

        final = alice.get(offerset["meta"]["url"], headers=JSON).json()
        phases = [o["phase"] for o in final["offers"]]
        assert phases[0] == "REJECTED"
        assert phases[1] not in {"OFFERED", "REJECTED"}
        assert all(p == "REJECTED" for p in phases[2:])

        def completed() -> dict[str, Any] | None:
            session = alice.get(f"/sessions/{offers[1]}", headers=JSON).json()
            assert session["phase"] not in TERMINAL - {"COMPLETED"}, session
            return session if session["phase"] == "COMPLETED" else None

        session = wait_for(completed, 120)
        validate_against("ScheduledExecutionSession", session)
        assert "options" not in session["meta"]  # nothing is legal any more
        outputs = [c for c in session.get("connectors", []) if c["status"] == "FINISHED"]
        assert any(c["kind"].endswith("/notebook") for c in outputs), session

        follower.join(20)
        assert [e["phase"] for e in seen if e["session_id"] == offers[1]][-1] == "COMPLETED"
        assert {e["session_id"] for e in seen} <= set(offers)  # only alice's sessions

        history = alice.get(f"/sessions/{offers[1]}/events", headers=JSON).json()
        assert [e["phase"] for e in history["events"]][-1] == "COMPLETED"
        listed = alice.get("/sessions", params={"phase": "COMPLETED"}, headers=JSON).json()["sessions"]
        assert offers[1] in [s["meta"]["uuid"] for s in listed]
        assert bob.get("/sessions", headers=JSON).json()["sessions"] == []


@requires_schemas
def test_direct_runs_one_offer(http: HttpBroker) -> None:
    with http.client() as alice:
        answer = alice.post("/direct", json=hello_request(), headers=JSON)
        assert answer.status_code == 303, answer.text
        session = answer.json()
        assert answer.headers["location"].endswith(f"/sessions/{session['meta']['uuid']}")
        assert session["phase"] not in {"OFFERED", "REJECTED"}
        validate_against("ScheduledExecutionSession", session)
        refused = alice.post("/direct", json={"compute": {"cores": {"min": 1}}}, headers=JSON)
        assert refused.status_code == 400
        assert refused.json()["phase"] == "FAILED"
        assert refused.json()["meta"]["messages"]


def test_errors_have_bodies_and_yaml_is_the_default(http: HttpBroker) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with http.client() as alice, http.client(None) as anonymous:
        # No Accept: the answer is YAML, as the draft standard says.
        raw = alice.post(
            "/requests",
            content=yaml.safe_dump(hello_request()),
            headers={"Accept": "", "Content-Type": "application/yaml"},
        )
        assert raw.status_code == 303
        assert raw.headers["content-type"].startswith("application/yaml")
        assert yaml.safe_load(raw.text)["result"] == "YES"
        # A body must say what it is: a browser page elsewhere can post bodies without a type (or as
        # text/plain) to any site without asking first (tests/e2e/test_http_hardening.py).
        untyped = alice.post("/requests", content=yaml.safe_dump(hello_request()), headers={"Accept": ""})
        assert untyped.status_code == 415
        assert yaml.safe_load(untyped.text)["messages"][0]["kind"] == "urn:unsupported-media-type"

        for status, response in [
            (404, alice.get(f"/sessions/{missing}", headers=JSON)),
            (404, alice.get(f"/offersets/{missing}", headers=JSON)),
            (404, update(alice, missing, "ACCEPTED")),
            (422, alice.post("/requests", content=b"{not json", headers=JSON)),
            (422, alice.post(f"/sessions/{missing}", content=b"[1, 2", headers=JSON)),
            (422, alice.post(f"/sessions/{missing}", json={"kind": "uri:enum-value-update", "path": "x"})),
            (401, anonymous.get("/sessions", headers=JSON)),
            (401, anonymous.post("/requests", json=hello_request(), headers=JSON)),
            (401, alice.get("/sessions", headers=JSON, auth=("alice", "wrong"))),
        ]:
            assert response.status_code == status, (status, response.text)
            messages = _body(response)["messages"]
            assert messages and messages[0]["message"]
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Basic")

        # Only the admin creates identities; duplicates and missing fields are refused.
        assert alice.post("/admin/identities", json={"username": "x", "password": "y"}).status_code == 403
        with http.client(("admin", "admin-secret")) as admin:
            assert (
                admin.post("/admin/identities", json={"username": "alice", "password": "z"}).status_code
                == 409
            )
            assert admin.post("/admin/identities", json={"username": "carol"}).status_code == 400

        # A NO offer set is a successful answer.
        no = alice.post("/requests", json={"compute": {"cores": {"min": 1}}}, headers=JSON)
        assert no.status_code == 303
        assert no.json()["result"] == "NO"
        assert no.json()["meta"]["messages"]


def test_the_bus_contract_is_served_as_asyncapi(
    http: HttpBroker, asyncapi_validator: Draft7Validator
) -> None:
    # Public, like /openapi.json: the document describes the bus, it grants nothing.
    with http.client(None) as anonymous:
        response = anonymous.get("/asyncapi.json")
    assert response.status_code == 200, response.text
    document = response.json()
    assert problems(asyncapi_validator, document) == []
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert "eb.offersets.{owner}.{request_id}" in addresses
