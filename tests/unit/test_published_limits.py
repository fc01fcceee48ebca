"""Every limit a request is held to at parse time is stated in the schemas the broker publishes: the
HTTP API's OpenAPI document and the bus's AsyncAPI document. The expectations are built from the
constants of `shared.models.limits`, and every constant of it must be expected somewhere, so a new
limit cannot be added without saying where a client reads it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared import iso8601
from shared.asyncapi import document
from shared.models import limits
from shared.models.serialise import MAX_DOCUMENT_BYTES, MAX_DOCUMENT_DEPTH
from shared.service import installed_services
from shared.settings import Settings
from tests.e2e.test_pools import POOLS as TWO_POOLS
from tests.unit.test_http_auth import app_client

Schema = dict[str, Any]
#: (schema name, property path, keyword, value): the value the keyword must have on that property.
Expectation = tuple[str, tuple[str, ...], str, Any]


def numbers(low: float, high: float) -> list[tuple[str, Any]]:
    return [("minimum", low), ("maximum", high)]


def on(schema: str, path: tuple[str, ...], pairs: list[tuple[str, Any]]) -> list[Expectation]:
    return [(schema, path, keyword, value) for keyword, value in pairs]


MAX_INT = limits.MAX_INTEGER
#: Per constant of `limits`, where it is stated (the bounds of `parsing._check_semantics` included).
EXPECTED: dict[str, list[Expectation]] = {
    "MAX_CORES": on("SimpleComputeResource", ("cores", "min"), numbers(1, limits.MAX_CORES))
    + on("SimpleComputeResource", ("cores", "max"), numbers(1, limits.MAX_CORES)),
    "MAX_GIB": on("SimpleComputeResource", ("memory", "max"), numbers(1, limits.MAX_GIB))
    + on("SimpleStorageResource", ("size", "min"), numbers(0, limits.MAX_GIB)),
    "MAX_BYTES": on("IvoaDataLinkItem", ("content_length",), numbers(-MAX_INT, limits.MAX_BYTES))
    + on("SkaoDataResourceBlock", ("datasize",), numbers(-MAX_INT, limits.MAX_BYTES)),
    "MAX_INTEGER": on("IvoaObsCoreItem", ("calib_level",), numbers(-MAX_INT, MAX_INT)),
    "MAX_FLOAT": on("SimpleMinMaxFloatCost", ("max",), numbers(-limits.MAX_FLOAT, limits.MAX_FLOAT))
    + on("SimpleMinMaxFloatMetric", ("min",), numbers(-limits.MAX_FLOAT, limits.MAX_FLOAT)),
    "MAX_PORT": on("DockerInternalPort", ("port",), numbers(1, limits.MAX_PORT)),
    "MAX_COMPONENTS": [
        ("ExecutionRequest", ("storage",), "maxItems", limits.MAX_COMPONENTS),
        ("ExecutionRequest", ("data",), "maxItems", limits.MAX_COMPONENTS),
        ("SimpleComputeResource", ("volumes",), "maxItems", limits.MAX_COMPONENTS),
        ("SimpleStorageResource", ("data",), "maxItems", limits.MAX_COMPONENTS),
    ],
    "MAX_ITEMS": [
        ("ExecutionRequest", ("costs",), "maxItems", limits.MAX_ITEMS),
        ("ComponentMetadata", ("messages",), "maxItems", limits.MAX_ITEMS),
        ("DockerImageSpec", ("locations",), "maxItems", limits.MAX_ITEMS),
        ("SkaoDataResourceBlock", ("replicas",), "maxItems", limits.MAX_ITEMS),
    ],
    "MAX_ARGUMENTS": [
        ("LocalCommand", ("command",), "maxItems", limits.MAX_ARGUMENTS),
        ("LocalCommand", ("environment",), "maxProperties", limits.MAX_ARGUMENTS),
    ],
    "MAX_DURATION": [
        ("RequestedScheduleItem", ("duration",), "description", iso8601.format_duration(limits.MAX_DURATION)),
        ("StartDurationInterval", ("duration",), "description", iso8601.format_duration(limits.MAX_DURATION)),
    ],
    "MAX_MESSAGES": [("OfferSetResponse", (), "description", str(limits.MAX_MESSAGES))],
    "MAX_ANSWER_BYTES": [("OfferSetResponse", (), "x-max-bytes", limits.MAX_ANSWER_BYTES)],
}
#: Not in `limits`, but checked before any field (`load_document`): a document's size and depth.
DOCUMENTS: list[Expectation] = [
    (model, (), keyword, value)
    for model in ("ExecutionRequest", "EnumValueUpdate")
    for keyword, value in (("x-max-bytes", MAX_DOCUMENT_BYTES), ("x-max-depth", MAX_DOCUMENT_DEPTH))
]


def constants() -> set[str]:
    return {name for name in vars(limits) if name.startswith("MAX_")}


def test_every_limit_constant_is_expected_somewhere() -> None:
    assert constants() == set(EXPECTED)


def property_schema(schemas: dict[str, Schema], name: str, path: tuple[str, ...]) -> Schema:
    """The schema of a property: through `$ref`s and `allOf` wrappers, on its non-null branch."""
    node = schemas[name]
    for key in path:
        node = _branch(schemas, node)
        if key not in node.get("properties", {}):
            wrapped = [_branch(schemas, part) for part in node.get("allOf", [])]
            node = next(part for part in [node, *wrapped] if key in part.get("properties", {}))
        node = node["properties"][key]
    return node


def _branch(schemas: dict[str, Schema], node: Schema, *, keep_wrapper: bool = False) -> Schema:
    choices = [c for c in node.get("anyOf", [node]) if c.get("type") != "null"]
    assert len(choices) == 1, f"expected one non-null branch: {node}"
    (choice,) = choices
    if "$ref" in choice and not keep_wrapper:
        return _branch(schemas, schemas[choice["$ref"].rsplit("/", 1)[1]])
    return choice


def check(schemas: dict[str, Schema], expectations: list[Expectation]) -> None:
    for name, path, keyword, value in expectations:
        node = property_schema(schemas, name, path)
        if keyword == "description":  # of the property, not of its type
            assert value in node.get(keyword, ""), (name, path, node)
            continue
        stated = _branch(schemas, node, keep_wrapper=True).get(keyword)
        # FastAPI's OpenAPI models hold minimum and maximum as floats: 2**63 - 1 is served as the
        # double nearest to it, which is what a JSON reader with doubles makes of it anyway.
        exact = stated == value and type(stated) is type(value)
        assert exact or stated == float(value), f"{name}.{'.'.join(path)}: {keyword} is {stated}, not {value}"


def all_expectations() -> list[Expectation]:
    return [e for group in EXPECTED.values() for e in group] + DOCUMENTS


async def test_the_openapi_document_states_every_limit(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, _):
        served = (await client.get("/openapi.json")).json()
    check(served["components"]["schemas"], all_expectations())
    bodies = [
        op["requestBody"] for path in served["paths"].values() for op in path.values() if "requestBody" in op
    ]
    assert len(bodies) >= 3  # at least the requests, the direct requests and the session updates
    for body in bodies:
        assert f"{MAX_DOCUMENT_BYTES} bytes" in body["description"]
        assert f"{MAX_DOCUMENT_DEPTH} levels" in body["description"]


def test_the_asyncapi_document_states_every_limit(tmp_path: Path) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text(TWO_POOLS)
    settings = Settings(data_dir=tmp_path / "data", pools=pools)
    published = document([entry.wiring(settings) for entry in installed_services().values()], version="1")
    check(published["components"]["schemas"], all_expectations())


@pytest.mark.parametrize("keyword", ["maximum", "maxItems"])
def test_a_missing_bound_is_noticed(keyword: str) -> None:
    """The check itself fails when a schema lacks a bound (so the tests above can fail)."""
    schemas: dict[str, Schema] = {
        "M": {"properties": {"f": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}
    }
    with pytest.raises(AssertionError):
        check(schemas, [("M", ("f",), keyword, 1)])
