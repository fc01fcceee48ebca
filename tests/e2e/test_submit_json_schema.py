"""`broker submit/accept/watch --json` against running services: schema-valid JSON, and a clear error
when nothing listens."""

from __future__ import annotations

from shared.ops.embedded import EmbeddedBroker, free_port
from tests.e2e.helpers import HAPPY_PHASES, HELLO_REQUEST, json_documents, login_env, run_cli
from tests.schema_validation import requires_schemas, validate_against


@requires_schemas
def test_submit_json_is_a_valid_offer_set_and_the_session_completes(broker: EmbeddedBroker) -> None:
    alice = login_env(broker, "alice")
    submitted = run_cli("submit", str(HELLO_REQUEST), "--json", "--nats-url", broker.url, **alice)
    assert submitted.returncode == 0, submitted.stderr
    (offerset,) = json_documents(submitted.stdout)
    validate_against("OfferSetResponse", offerset)
    assert offerset["result"] == "YES"
    offers = offerset["offers"]
    assert 1 <= len(offers) <= 4
    for offer in offers:
        validate_against("ScheduledExecutionSession", offer)
        assert offer["phase"] == "OFFERED"
    session_id = offers[0]["meta"]["uuid"]

    accepted = run_cli("accept", session_id, "--json", "--nats-url", broker.url, **alice)
    assert accepted.returncode == 0, accepted.stderr
    (result,) = json_documents(accepted.stdout)
    assert result["session_id"] == session_id
    assert result["applied"] is True
    assert result["phase"] == "ACCEPTED"

    watch = ("watch", session_id, "--until-done", "--json", "--nats-url", broker.url)
    watched = run_cli(*watch, timeout=90, **alice)
    assert watched.returncode == 0, watched.stderr
    events = json_documents(watched.stdout)
    assert {event["session_id"] for event in events} == {session_id}
    assert tuple(event["phase"] for event in events) == HAPPY_PHASES
    assert "notebook" in events[-1]["outputs"]


def test_submit_without_a_broker_fails_with_one_clear_line() -> None:
    port = free_port()  # bound and released at once: nothing listens there
    result = run_cli("submit", str(HELLO_REQUEST), "--json", "--nats-url", f"nats://127.0.0.1:{port}",
                     timeout=30, EB_NATS_USER="alice", EB_NATS_PASSWORD="not-checked")
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line of error, got {len(lines)}:\n{result.stderr}"
    assert "no broker answers" in lines[0]
    assert f"127.0.0.1:{port}" in lines[0]
