from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.models import (
    DOCKER_CONTAINER_KIND,
    ENUM_VALUE_UPDATE_KIND,
    JUPYTER_NOTEBOOK_KIND,
    KIND_BASE,
    MAX_DOCUMENT_BYTES,
    OFFERSET_KIND,
    SCHEDULED_SESSION_KIND,
    SIMPLE_COMPUTE_KIND,
    SIMPLE_DATA_KIND,
    SIMPLE_SESSION_KIND,
    SIMPLE_STORAGE_KIND,
    SIMPLE_VOLUME_KIND,
    SKAO_DATA_KIND,
    ComponentMetadata,
    DockerContainer,
    DocumentError,
    EnumValueUpdate,
    ExecutionRequest,
    InvalidRequest,
    JupyterNotebook,
    MessageItem,
    MessageLevel,
    OfferSetResponse,
    ScheduledExecutionSession,
    SimpleComputeResource,
    SimpleDataResource,
    SkaoDataResource,
    dump_json,
    dump_yaml,
    load_document,
    normalise_kind,
    parse_execution_request,
    to_jsonable,
)

REQUESTS = Path(__file__).resolve().parents[1] / "data" / "requests"
EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"
NOW = datetime(2025, 11, 25, 5, 22, 10, tzinfo=UTC)

OLD_V1 = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/"
OLDER = "https://www.purl.org/ivoa.net/EB/schema/types/"


# -- kinds ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "current"),
    [
        (OLD_V1 + "executable/jupyter-notebook-1.0", JUPYTER_NOTEBOOK_KIND),
        (OLD_V1 + "compute/simple-compute-resource-1.0", SIMPLE_COMPUTE_KIND),
        (OLD_V1 + "session/scheduled-execution-session-1.0", SCHEDULED_SESSION_KIND),
        (OLD_V1 + "offerset/execution-offerset-1.0", OFFERSET_KIND),
        (OLDER + "executable/docker-container-1.0", DOCKER_CONTAINER_KIND),
        (OLDER + "data/skao-data-resource-1.0", SKAO_DATA_KIND),
        (OLDER + "data/s3-data-resource-1.0", KIND_BASE + "data/S3-data-resource.yaml"),
        (OLDER + "executables/docker-container-1.0", DOCKER_CONTAINER_KIND),
        (OLDER + "resources/compute/simple-compute-resource-1.0", SIMPLE_COMPUTE_KIND),
        (OLDER + "storage/simple-storage-resource-1.0", SIMPLE_STORAGE_KIND),
        (OLDER + "volume/simple-volume-mount-1.0", SIMPLE_VOLUME_KIND),
        (KIND_BASE + "computer/simple-compute-resource.yaml", SIMPLE_COMPUTE_KIND),
        ("http://purl.org/ivoa.net/EB/schema/v1.0/types/data/simple-data-resource-1.0", SIMPLE_DATA_KIND),
        (SIMPLE_SESSION_KIND, SIMPLE_SESSION_KIND),
    ],
)
def test_normalise_kind(alias: str, current: str) -> None:
    assert normalise_kind(alias) == current


@pytest.mark.parametrize(
    "unknown",
    [
        "",
        "urn:whatever",
        OLD_V1 + "executable/no-such-thing-1.0",
        KIND_BASE + "data/abstract-data-resource.yaml",
        ENUM_VALUE_UPDATE_KIND,
    ],
)
def test_normalise_kind_leaves_unknown_unchanged(unknown: str) -> None:
    assert normalise_kind(unknown) == unknown


# -- messages -------------------------------------------------------------------------------------


def test_message_helpers_render_the_template() -> None:
    item = MessageItem.error(
        "uri:unknown-type", "Unknown kind [${kind}] at ${where}", time=NOW, kind="x", where=3
    )
    assert item.level is MessageLevel.ERROR
    assert item.kind == "uri:unknown-type"
    assert item.values == {"kind": "x", "where": "3"}
    assert item.message == "Unknown kind [x] at 3"
    assert item.time == NOW
    assert MessageItem.warn("urn:resource-limit", "capped").level is MessageLevel.WARN
    assert MessageItem.info("urn:x", "hello ${missing}").message == "hello ${missing}"
    assert MessageItem.info("urn:x", "plain").values is None


# -- round trips ----------------------------------------------------------------------------------


def sample_offerset() -> OfferSetResponse:
    session = ScheduledExecutionSession.model_validate(
        {
            "meta": {"uuid": "0b7e2b1e-34b2-4a0b-9d6c-2c0b1c3d4e5f", "name": "req-offer-0", "created": NOW},
            "phase": "OFFERED",
            "expires": "2025-11-25T05:27:10Z",
            "executable": {"kind": JUPYTER_NOTEBOOK_KIND, "location": "hello.ipynb", "phase": "INITIALIZING"},
            "compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": {"min": 2, "max": 2}},
            "schedule": {
                "preparing": {"start": "2025-11-25T05:23:00Z", "duration": "PT1M"},
                "available": {"start": "2025-11-25T05:24:00Z/PT0S", "duration": "PT2H"},
            },
        }
    )
    return OfferSetResponse(
        meta=ComponentMetadata(
            name="req", created=NOW, messages=[MessageItem.info("urn:ok", "fine", time=NOW)]
        ),
        result="YES",
        offers=[session],
    )


def test_json_round_trip() -> None:
    offerset = sample_offerset()
    raw = dump_json(offerset)
    document = json.loads(raw)
    assert document["kind"] == OFFERSET_KIND
    assert document["meta"]["created"] == "2025-11-25T05:22:10Z"
    assert document["offers"][0]["expires"] == "2025-11-25T05:27:10Z"
    assert "description" not in document  # nulls omitted
    assert OfferSetResponse.model_validate(load_document(raw)) == offerset


def test_yaml_round_trip() -> None:
    offerset = sample_offerset()
    text = dump_yaml(offerset)
    assert not text.startswith("---")
    assert "null" not in text
    assert OfferSetResponse.model_validate(load_document(text, "application/yaml")) == offerset


def test_yaml_no_is_not_a_boolean() -> None:
    document = load_document("kind: " + OFFERSET_KIND + "\nresult: NO\n")
    assert document["result"] == "NO"
    assert OfferSetResponse.model_validate(document).result == "NO"


def test_yaml_timestamps_stay_strings() -> None:
    document = load_document("schedule:\n  requested:\n    start: 2025-11-25T05:24:00Z\n")
    assert document["schedule"]["requested"]["start"] == "2025-11-25T05:24:00Z"


def test_java_server_quirks_parse() -> None:
    session = ScheduledExecutionSession.model_validate(
        {
            "kind": OLD_V1 + "session/simple-execution-session-1.0",
            "compute": {"kind": KIND_BASE + "computer/simple-compute-resource.yaml"},
        }
    )
    assert session.kind == SIMPLE_SESSION_KIND
    assert session.compute is not None
    assert session.compute.kind == SIMPLE_COMPUTE_KIND


def test_enum_value_update() -> None:
    update = EnumValueUpdate.model_validate(
        {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    )
    assert to_jsonable(update) == {"kind": ENUM_VALUE_UPDATE_KIND, "path": "phase", "value": "ACCEPTED"}


def test_constructed_models_have_current_kinds() -> None:
    request = ExecutionRequest(
        executable=JupyterNotebook(location="x.ipynb"), compute=SimpleComputeResource()
    )
    document = to_jsonable(request)
    assert document["executable"]["kind"] == JUPYTER_NOTEBOOK_KIND
    assert document["compute"]["kind"] == SIMPLE_COMPUTE_KIND
    assert parse_execution_request(document) == request


# -- the worked examples of section 4.7 -------------------------------------------------------------


def test_example_a_old_v1_kinds_json() -> None:
    request = parse_execution_request((REQUESTS / "example-a-notebook.json").read_bytes(), now=NOW)
    assert isinstance(request.executable, JupyterNotebook)
    assert request.executable.kind == JUPYTER_NOTEBOOK_KIND
    assert isinstance(request.compute, SimpleComputeResource)
    assert request.compute.kind == SIMPLE_COMPUTE_KIND
    assert request.compute.cores is not None and (request.compute.cores.min, request.compute.cores.max) == (
        5,
        15,
    )
    assert request.compute.memory is not None and request.compute.memory.max == 9
    assert request.schedule is not None and request.schedule.requested is not None
    assert request.schedule.requested.duration == "PT1H"
    assert to_jsonable(request)["executable"]["kind"] == JUPYTER_NOTEBOOK_KIND


def test_example_b_docker_volume_yaml() -> None:
    request = parse_execution_request((REQUESTS / "example-b-docker-volume.yaml").read_text(), now=NOW)
    assert isinstance(request.executable, DockerContainer)
    assert request.executable.image.locations == ["ghcr.io/zarquan/heliophorus-androcles:sha-9a2513b"]
    assert request.executable.command == ["sha256sum", "json"]
    assert request.compute is not None and request.compute.volumes is not None
    volume = request.compute.volumes[0]
    assert (volume.kind, volume.path, volume.mode, volume.resource) == (
        SIMPLE_VOLUME_KIND,
        "/input",
        "READONLY",
        "input-data",
    )
    assert request.data is not None
    assert isinstance(request.data[0], SimpleDataResource)
    assert request.data[0].location == "https://example.org/images/sample.jpeg"


def test_example_c_skao_old_kinds_yaml() -> None:
    request = parse_execution_request((REQUESTS / "example-c-skao.yaml").read_bytes(), now=NOW)
    assert isinstance(request.executable, DockerContainer)
    assert request.executable.kind == DOCKER_CONTAINER_KIND
    assert request.compute is None and request.schedule is None
    assert request.data is not None
    data = request.data[0]
    assert isinstance(data, SkaoDataResource)
    assert data.kind == SKAO_DATA_KIND
    assert data.skao is not None and data.skao.datasize == 27487790694400
    assert data.skao.replicas is not None
    assert [r.rsename for r in data.skao.replicas] == ["AUSRC_STORM", "JPSRC_STORM", "SPSRC_STORM"]


def test_skao_replicas_as_bare_names() -> None:
    data = SkaoDataResource.model_validate({"skao": {"replicas": ["AUSRC_STORM"]}})
    assert data.skao is not None and data.skao.replicas is not None
    assert data.skao.replicas[0].rsename == "AUSRC_STORM"


def test_hello_example_request() -> None:
    request = parse_execution_request((EXAMPLES / "hello-notebook.yaml").read_bytes())
    assert isinstance(request.executable, JupyterNotebook)
    assert request.executable.location == "hello.ipynb"
    assert (
        request.compute is not None
        and request.compute.cores is not None
        and request.compute.memory is not None
    )
    assert (request.compute.cores.min, request.compute.cores.max) == (1, 2)
    assert (request.compute.memory.min, request.compute.memory.max) == (1, 2)
    assert request.schedule is not None and request.schedule.requested is not None
    assert request.schedule.requested.duration == "PT10M"


def test_hello_notebook_is_valid_and_stdlib_only() -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(EXAMPLES / "hello.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert 2 <= len(code) <= 3
    for cell in code:
        # Executed as plain Python: the notebook must not need anything but the standard library.
        exec(compile(cell.source, "hello.ipynb", "exec"), {})


# -- specific failure messages --------------------------------------------------------------------


def notebook(**extra: Any) -> dict[str, Any]:
    return {"kind": JUPYTER_NOTEBOOK_KIND, "location": "x.ipynb", **extra}


def kinds_of(raw: Any) -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        parse_execution_request(raw, now=NOW)
    messages = caught.value.messages
    assert messages
    for item in messages:
        assert item.level is MessageLevel.ERROR
        assert item.template and item.message and "${" not in item.message
        assert item.time == NOW
    return [item.kind for item in messages]


def only_message(raw: Any) -> MessageItem:
    with pytest.raises(InvalidRequest) as caught:
        parse_execution_request(raw, now=NOW)
    assert len(caught.value.messages) == 1, caught.value.messages
    return caught.value.messages[0]


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00garbage",
        b"executable: [",
        '{"executable": ',
        "[1, 2]",
        "just a string",
        "",
        "42",
        "null",
    ],
)
def test_syntax_fail(raw: bytes | str) -> None:
    item = only_message(raw)
    assert item.kind == "urn:input-syntax-fail"
    assert item.message is not None and item.message.startswith(
        "The request could not be parsed as JSON or YAML: "
    )
    assert item.values and item.values["reason"]


def test_yaml_aliases_are_refused() -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    assert only_message(bomb).kind == "urn:input-syntax-fail"


def test_too_large() -> None:
    raw = b'{"executable": {"location": "' + b"x" * MAX_DOCUMENT_BYTES + b'"}}'
    item = only_message(raw)
    assert item.kind == "urn:input-too-large"


def test_unknown_kind_names_kind_and_place() -> None:
    raw = {
        "executable": notebook(),
        "data": [
            {"kind": SIMPLE_DATA_KIND, "meta": {"name": "ok"}, "location": "https://example.org/d"},
            {"kind": KIND_BASE + "data/abstract-data-resource.yaml", "meta": {"name": "placeholder"}},
        ],
    }
    item = only_message(raw)
    assert item.kind == "uri:unknown-type"
    assert item.values == {"kind": KIND_BASE + "data/abstract-data-resource.yaml", "where": "data[1]"}


def test_unknown_executable_kind() -> None:
    item = only_message({"executable": {"kind": "urn:my-robot", "location": "x"}})
    assert item.kind == "uri:unknown-type"
    assert item.values == {"kind": "urn:my-robot", "where": "executable"}


def test_unknown_volume_kind() -> None:
    raw = {
        "executable": notebook(),
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "volumes": [{"kind": "urn:nfs"}]},
    }
    item = only_message(raw)
    assert item.kind == "uri:unknown-type"
    assert item.values is not None and item.values["where"] == "compute.volumes[0]"


def test_executable_required() -> None:
    assert kinds_of({"compute": {"kind": SIMPLE_COMPUTE_KIND}}) == ["urn:executable-required"]
    assert kinds_of({"executable": None}) == ["urn:executable-required"]


@pytest.mark.parametrize(
    ("cores", "path", "value"),
    [
        ({"min": "5"}, "compute.cores.min", '"5"'),
        ({"min": 0}, "compute.cores.min", "0"),
        ({"min": -3}, "compute.cores.min", "-3"),
        ({"min": 1.5}, "compute.cores.min", "1.5"),
        ({"max": True}, "compute.cores.max", "true"),
        ({"min": 4, "max": 2}, "compute.cores.max", "2"),
    ],
)
def test_invalid_cores(cores: dict[str, Any], path: str, value: str) -> None:
    item = only_message({"executable": notebook(), "compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": cores}})
    assert item.kind == "urn:invalid-value"
    assert item.values is not None
    assert (item.values["path"], item.values["value"]) == (path, value)


def test_invalid_memory() -> None:
    item = only_message(
        {"executable": notebook(), "compute": {"kind": SIMPLE_COMPUTE_KIND, "memory": {"min": 0}}}
    )
    assert item.kind == "urn:invalid-value"
    assert item.values is not None and item.values["path"] == "compute.memory.min"


def test_invalid_nested_type_has_path() -> None:
    raw = {"executable": {"kind": DOCKER_CONTAINER_KIND, "image": {"locations": "not-a-list"}}}
    item = only_message(raw)
    assert item.kind == "urn:invalid-value"
    assert item.values is not None and item.values["path"] == "executable.image.locations"


def test_missing_required_value() -> None:
    item = only_message({"executable": {"kind": JUPYTER_NOTEBOOK_KIND}})
    assert item.kind == "urn:missing-required-value"
    assert item.values == {"path": "executable.location"}


def test_duplicate_resource() -> None:
    raw = {
        "executable": notebook(),
        "storage": [{"kind": SIMPLE_STORAGE_KIND, "meta": {"name": "scratch"}}],
        "data": [
            {"kind": SIMPLE_DATA_KIND, "meta": {"name": "input"}, "location": "https://example.org/d"},
            {"kind": SIMPLE_DATA_KIND, "meta": {"name": "input"}, "location": "https://example.org/d"},
            {"kind": SIMPLE_DATA_KIND, "meta": {"name": "scratch"}, "location": "https://example.org/d"},
        ],
    }
    assert kinds_of(raw) == ["urn:duplicate-resource", "urn:duplicate-resource"]


def test_volume_resource_not_found() -> None:
    raw = {
        "executable": notebook(),
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "volumes": [{"kind": SIMPLE_VOLUME_KIND, "path": "/input", "resource": "missing-data"}],
        },
        "data": [
            {"kind": SIMPLE_DATA_KIND, "meta": {"name": "input-data"}, "location": "https://example.org/d"}
        ],
    }
    item = only_message(raw)
    assert item.kind == "uri:resource-not-found"
    assert item.values is not None and item.values["resource"] == "missing-data"


def test_data_storage_reference_not_found() -> None:
    raw = {
        "executable": notebook(),
        "data": [{"kind": SIMPLE_DATA_KIND, "storage": "nowhere", "location": "https://example.org/d"}],
    }
    assert kinds_of(raw) == ["uri:resource-not-found"]


def test_iso_syntax_is_not_checked_here() -> None:
    request = parse_execution_request(
        {"executable": notebook(), "schedule": {"requested": {"duration": "two hours", "start": "soon"}}}
    )
    assert request.schedule is not None and request.schedule.requested is not None
    assert request.schedule.requested.duration == "two hours"


def test_several_problems_reported_together() -> None:
    raw = {"compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": {"min": "x"}}, "data": [{"kind": "urn:nope"}]}
    assert sorted(kinds_of(raw)) == ["uri:unknown-type", "urn:executable-required", "urn:invalid-value"]


def test_load_document_rejects_json_only_yaml() -> None:
    with pytest.raises(DocumentError, match="invalid JSON"):
        load_document("executable: {}", "application/json")


# -- bad input never raises anything but InvalidRequest --------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=25,
)
component_keys = st.sampled_from(
    ["kind", "meta", "location", "cores", "memory", "volumes", "image", "storage", "data", "resource", "name"]
)
component = st.dictionaries(
    component_keys,
    json_values
    | st.sampled_from([JUPYTER_NOTEBOOK_KIND, SIMPLE_COMPUTE_KIND, SIMPLE_DATA_KIND, OLD_V1 + "x-1.0"]),
    max_size=6,
)
request_like = st.fixed_dictionaries(
    {},
    optional={
        "executable": component | json_values,
        "compute": component | json_values,
        "storage": st.lists(component, max_size=3) | json_values,
        "data": st.lists(component, max_size=3) | json_values,
        "schedule": json_values,
        "costs": json_values,
    },
)


def accepts_or_explains(raw: Any) -> None:
    try:
        parse_execution_request(raw, now=NOW)
    except InvalidRequest as error:
        assert error.messages
        assert all(item.kind.startswith(("urn:", "uri:")) for item in error.messages)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    accepts_or_explains(raw)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(request_like)
def test_arbitrary_request_like_mappings(raw: dict[str, Any]) -> None:
    accepts_or_explains(raw)
    accepts_or_explains(json.dumps(raw))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_arbitrary_text(raw: str) -> None:
    accepts_or_explains(raw)
