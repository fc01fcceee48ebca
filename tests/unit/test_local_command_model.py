"""The `LocalCommand` executable: our extension kind, outside the Calycopis URI space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.models import (
    KIND_BASE,
    LOCAL_COMMAND_KIND,
    SIMPLE_COMPUTE_KIND,
    ComponentMetadata,
    InvalidRequest,
    LocalCommand,
    MessageItem,
    OfferSetResponse,
    ScheduledExecutionSession,
    normalise_kind,
    parse_execution_request,
    to_jsonable,
)
from shared.platforms.registry import capabilities
from tests.schema_validation import requires_schemas, validate_against

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"


def only_message(raw: dict[str, Any]) -> MessageItem:
    with pytest.raises(InvalidRequest) as caught:
        parse_execution_request(raw)
    assert len(caught.value.messages) == 1, caught.value.messages
    return caught.value.messages[0]


def command(**fields: Any) -> dict[str, Any]:
    return {"kind": LOCAL_COMMAND_KIND, **fields}


def test_the_kind_is_a_urn_outside_the_calycopis_space() -> None:
    assert LOCAL_COMMAND_KIND == "urn:execution-broker:kinds/executable/local-command"
    assert not LOCAL_COMMAND_KIND.startswith(KIND_BASE)
    assert normalise_kind(LOCAL_COMMAND_KIND) == LOCAL_COMMAND_KIND


def test_a_request_with_a_local_command_parses_and_round_trips() -> None:
    raw = {
        "executable": command(
            meta={"name": "hi"}, command=["echo", "hello"], environment={"GREETING": "hello"}
        ),
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": {"min": 1, "max": 1}},
    }
    request = parse_execution_request(raw)
    assert isinstance(request.executable, LocalCommand)
    assert request.executable.command == ["echo", "hello"]
    assert request.executable.environment == {"GREETING": "hello"}
    assert to_jsonable(request)["executable"] == {
        "kind": LOCAL_COMMAND_KIND,
        "meta": {"name": "hi"},
        "command": ["echo", "hello"],
        "environment": {"GREETING": "hello"},
    }
    assert parse_execution_request(to_jsonable(request)) == request


def test_a_constructed_local_command_has_its_kind() -> None:
    assert LocalCommand(command=["true"]).kind == LOCAL_COMMAND_KIND


def test_a_missing_command_names_the_field() -> None:
    item = only_message({"executable": command()})
    assert item.kind == "urn:missing-required-value"
    assert item.values == {"path": "executable.command"}


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ([], "executable.command", "at least 1 item"),
        ("echo hello", "executable.command", "valid list"),
        (["echo", 3], "executable.command[1]", "valid string"),
        ([""], "executable.command", "must not be empty"),
        (["echo", "a\0b"], "executable.command", "NUL"),
    ],
    ids=["empty", "string", "number", "empty-program", "nul"],
)
def test_a_bad_command_is_an_invalid_value_with_its_path(value: Any, path: str, reason: str) -> None:
    item = only_message({"executable": command(command=value)})
    assert item.kind == "urn:invalid-value"
    assert item.values is not None and item.values["path"] == path
    assert reason in item.values["reason"]


@pytest.mark.parametrize("environment", [{"A=B": "x"}, {"": "x"}, {"A": 1}, ["A=1"]])
def test_a_bad_environment_is_an_invalid_value(environment: Any) -> None:
    item = only_message({"executable": command(command=["true"], environment=environment)})
    assert item.kind == "urn:invalid-value"
    assert item.values is not None and item.values["path"].startswith("executable.environment")


def test_the_local_platform_supports_it() -> None:
    assert LOCAL_COMMAND_KIND in capabilities("local").executable_kinds


def test_the_hello_command_example() -> None:
    request = parse_execution_request((EXAMPLES / "hello-command.yaml").read_bytes())
    assert isinstance(request.executable, LocalCommand)
    assert request.executable.command == ["echo", "hello from the broker"]
    assert request.compute is not None and request.compute.cores is not None
    assert (request.compute.cores.min, request.compute.cores.max) == (1, 1)
    assert request.compute.memory is not None
    assert (request.compute.memory.min, request.compute.memory.max) == (1, 1)
    assert request.schedule is not None and request.schedule.requested is not None
    assert request.schedule.requested.duration == "PT1M"


def offerset(executable: LocalCommand) -> dict[str, Any]:
    uuid = "00000000-0000-4000-8000-000000000001"
    session = ScheduledExecutionSession(
        meta=ComponentMetadata(uuid="00000000-0000-4000-8000-000000000101", name="offer"),
        phase="OFFERED",
        executable=executable,
    )
    response = OfferSetResponse(meta=ComponentMetadata(uuid=uuid), result="YES", offers=[session])
    return to_jsonable(response)


@requires_schemas
def test_an_offerset_with_a_local_command_conforms_to_the_schema() -> None:
    document = offerset(
        LocalCommand(meta=ComponentMetadata(name="cmd"), command=["true"], environment={"A": "1"})
    )
    assert document["offers"][0]["executable"]["kind"] == LOCAL_COMMAND_KIND
    validate_against("OfferSetResponse", document)


@requires_schemas
def test_the_example_request_conforms_to_the_schema() -> None:
    request = parse_execution_request((EXAMPLES / "hello-command.yaml").read_bytes())
    validate_against("ExecutionRequest", to_jsonable(request))


@requires_schemas
def test_unregistered_calycopis_executable_kinds_are_still_rejected_by_the_validator() -> None:
    document = offerset(LocalCommand(command=["true"]))
    document["offers"][0]["executable"]["kind"] = KIND_BASE + "executable/local-command.yaml"
    with pytest.raises(AssertionError, match="no schema"):
        validate_against("OfferSetResponse", document)
