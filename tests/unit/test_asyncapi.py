"""The bus contract (AsyncAPI 3.0.0) of the installed services: valid against the official schema,
complete for users, and true to the wiring tables and the subject grammar."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped]
from pydantic import BaseModel

from services.offers import domain
from shared import subjects
from shared.asyncapi import document
from shared.bus.wiring import Wiring
from shared.examples import example
from shared.messages import Hold, SessionEvent, UpdateResult
from shared.models import EnumValueUpdate, ExecutionRequest, MessageItem, OfferSetResponse
from shared.service import installed_services
from shared.settings import Settings
from shared.subjects import Pattern
from tests.asyncapi_schema import defined, problems, strings
from tests.e2e.test_pools import POOLS as TWO_POOLS  # "small" and "big", both local
from tests.unit.offers_policy import NOW, POLICY

#: What users send and receive (docs: DESIGN "Identity and permissions"), and the model of each.
USER_SUBJECTS: tuple[tuple[Pattern, str, type[BaseModel]], ...] = (
    (subjects.REQUEST, "send", ExecutionRequest),
    (subjects.UPDATE, "send", EnumValueUpdate),
    (subjects.OFFERSET, "receive", OfferSetResponse),
    (subjects.UPDATE_RESULT, "receive", UpdateResult),
    (subjects.SESSION, "receive", SessionEvent),
)


@pytest.fixture(scope="module")
def wirings(tmp_path_factory: pytest.TempPathFactory) -> list[Wiring]:
    pools = tmp_path_factory.mktemp("pools") / "pools.toml"
    pools.write_text(TWO_POOLS)
    settings = Settings(data_dir=pools.parent / "data", pools=pools)
    return [entry.wiring(settings) for entry in installed_services().values()]


@pytest.fixture(scope="module")
def doc(wirings: list[Wiring]) -> dict[str, Any]:
    return document(wirings, version="1.2.3")


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def operations(doc: dict[str, Any], tag: str, action: str, pattern: Pattern) -> list[dict[str, Any]]:
    return [
        op
        for op in doc["operations"].values()
        if op["action"] == action
        and {"name": tag} in op["tags"]
        and resolve(doc, op["channel"]["$ref"])["address"] == pattern.template
    ]


def message(doc: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    """The one message of ``op``: the channel's, which is the one in components."""
    (ref,) = op["messages"]
    found: dict[str, Any] = resolve(doc, resolve(doc, ref["$ref"])["$ref"])
    return found


def payload_validator(doc: dict[str, Any], op: dict[str, Any]) -> Draft7Validator:
    """A validator of the payload of ``op``, its references resolved inside the document."""
    return Draft7Validator({**message(doc, op)["payload"], "components": doc["components"]})


def test_the_document_is_valid_asyncapi_3(asyncapi_validator: Draft7Validator, doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["version"] == "1.2.3"
    assert problems(asyncapi_validator, doc) == []


def test_the_validator_finds_what_breaks_asyncapi(asyncapi_validator: Draft7Validator) -> None:
    # Guards the test above: the schema is the real one, with its references resolved.
    broken = {"asyncapi": "3.0.0", "info": {"title": "x", "version": "1"}}
    broken["operations"] = {"o": {"action": "publish", "channel": {"$ref": "#/channels/c"}}}
    assert any("publish" in line for line in problems(asyncapi_validator, broken))


def test_one_channel_per_pattern_with_its_parameters_described(doc: dict[str, Any]) -> None:
    addresses = [channel["address"] for channel in doc["channels"].values()]
    assert sorted(addresses) == sorted(p.template for p in subjects.PATTERNS)
    for pattern in subjects.PATTERNS:
        (channel,) = (c for c in doc["channels"].values() if c["address"] == pattern.template)
        assert set(channel.get("parameters", {})) == set(pattern.params)
        assert all(p["description"] for p in channel.get("parameters", {}).values())
        assert channel["summary"] == pattern.summary
        assert {"name": pattern.kind.value} in channel["tags"]
        if pattern.stream is not None:
            assert pattern.stream in channel["description"]


@pytest.mark.parametrize(
    ("pattern", "action", "model"), USER_SUBJECTS, ids=lambda v: getattr(v, "channel", v)
)
def test_every_subject_users_touch_has_its_payload_schema(
    doc: dict[str, Any], pattern: Pattern, action: str, model: type[BaseModel]
) -> None:
    (op,) = operations(doc, "user", action, pattern)
    schema = resolve(doc, message(doc, op)["payload"]["$ref"])
    assert schema["title"] == model.__name__
    assert schema["properties"]


def test_what_users_send_and_receive_validates_against_the_document(doc: dict[str, Any]) -> None:
    request = yaml.safe_load(example("hello-notebook.yaml").read_text(encoding="utf-8"))
    update = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    hold = Hold(
        session_id=str(uuid.uuid4()),
        pool="local",
        start=NOW + timedelta(minutes=5),
        end=NOW + timedelta(minutes=35),
        cores=2,
        memory_gib=4,
        prepare_s=60,
    )
    offerset = domain.build_offerset(
        "req-1",
        ExecutionRequest.model_validate(request),
        [hold],
        [],
        NOW + timedelta(minutes=5),
        NOW,
        POLICY,
    )
    assert offerset.result == "YES"
    problem = MessageItem.error("urn:forbidden", "Only ${who}", time=NOW, who="alice")
    result = UpdateResult(session_id=hold.session_id, update_id="u-1", applied=False, messages=[problem])
    event = SessionEvent(session_id=hold.session_id, phase="RUNNING", at=NOW, outputs={"log": "x"})
    for pattern, action, instance in (
        (subjects.REQUEST, "send", request),
        (subjects.UPDATE, "send", update),
        (subjects.OFFERSET, "receive", domain.no_offerset("o-1", [problem], NOW, POLICY)),
        (subjects.OFFERSET, "receive", offerset),
        (subjects.UPDATE_RESULT, "receive", result),
        (subjects.SESSION, "receive", event),
    ):
        (op,) = operations(doc, "user", action, pattern)
        wire = (
            instance.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(instance, BaseModel)
            else instance
        )
        errors = [e.message for e in payload_validator(doc, op).iter_errors(wire)]
        assert errors == [], f"{pattern.template}: {errors}"
    # And the schemas are no blank cheques: an update without its value is refused, and so is an
    # executable of a kind the broker does not know.
    (op,) = operations(doc, "user", "send", subjects.UPDATE)
    assert not payload_validator(doc, op).is_valid({"kind": "uri:enum-value-update", "path": "phase"})
    (op,) = operations(doc, "user", "send", subjects.REQUEST)
    unknown = {**request, "executable": {**request["executable"], "kind": "urn:no-such-kind"}}
    assert not payload_validator(doc, op).is_valid(unknown)


def test_every_durable_receives_its_filter_subjects(doc: dict[str, Any], wirings: list[Wiring]) -> None:
    for wiring in wirings:
        for consumer in wiring.consumers:
            for route in consumer.routes:
                received = [
                    op
                    for op in operations(doc, wiring.service, "receive", route.pattern)
                    if op.get("x-eb-durable") == consumer.durable
                ]
                assert len(received) == 1, f"{consumer.durable}: {route.subject}"
                (op,) = received
                assert route.subject in op["x-eb-subjects"]
                assert {"$ref": f"{op['channel']['$ref']}/messages/{route.payload.__name__}"} in op[
                    "messages"
                ]
    # Both pools' consumers are there, each with only its own pool's subjects.
    by_durable = {op["x-eb-durable"]: op for op in doc["operations"].values() if "x-eb-durable" in op}
    for pool in ("big", "small"):
        assert all(
            s.startswith(f"eb.scheduler.{pool}.cmd.")
            for s in by_durable[f"scheduler-{pool}"]["x-eb-subjects"]
        )


def test_every_publication_is_sent(doc: dict[str, Any], wirings: list[Wiring]) -> None:
    for wiring in wirings:
        for publication in wiring.publishes:
            (op,) = operations(doc, wiring.service, "send", publication.pattern)
            assert publication.subject in op["x-eb-subjects"]
            assert {"$ref": f"{op['channel']['$ref']}/messages/{publication.payload.__name__}"} in op[
                "messages"
            ]


def test_every_reply_subject_is_answered(doc: dict[str, Any], wirings: list[Wiring]) -> None:
    for wiring in wirings:
        for pattern, subject in [(r.pattern, r.subject) for r in wiring.replies] + [
            (subjects.HEALTH, wiring.health)
        ]:
            (op,) = operations(doc, wiring.service, "receive", pattern)
            assert op["x-eb-subjects"] == [subject]


def test_nothing_names_a_subject_no_pattern_defines(doc: dict[str, Any]) -> None:
    assert defined("eb.requests.*.*") and defined("eb.sessions.{owner}.s-1.RUNNING")
    assert not defined("eb.requests.alice") and not defined("eb.request.alice.r-1")
    named = {
        candidate.strip("`.,;:")
        for text in strings(doc)
        for candidate in text.split()
        if candidate.strip("`.,;:").startswith("eb.")
    }
    assert {"eb.requests.{owner}.{request_id}", "eb.scheduler.big.cmd.quote"} <= named
    assert sorted(s for s in named if not defined(s)) == []


def test_each_payload_schema_is_kept_once_in_components(doc: dict[str, Any]) -> None:
    refs = {s for s in strings(doc) if s.startswith("#/")}
    for ref in refs:
        resolve(doc, ref)  # every reference resolves inside the document
    assert "$defs" not in set(strings(doc))
    schemas = doc["components"]["schemas"]
    assert {"ExecutionRequest", "OfferSetResponse", "MessageItem", "LaunchSession"} <= set(schemas)
    assert not [name for name in schemas if name.endswith(("-Input", "-Output"))]
