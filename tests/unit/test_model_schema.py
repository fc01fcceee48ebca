"""The data model as a library (issue 15, item 6): `broker schema` prints a JSON Schema that the tests'
request documents satisfy and a broken one does not, one component at a time too; and importing the
models loads nothing of the bus, the services, NATS, a database or an HTTP client."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared.client import read_request_file
from shared.models import DOCKER_CONTAINER_KIND, parse_execution_request, to_jsonable
from shared.models.schema import COMPONENTS, UnknownComponent, component, json_schema

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = ROOT / "tests" / "data" / "requests"
EXAMPLES = ROOT / "shared" / "examples"
# Every request document the tests use, the legacy generations included.
DOCUMENTS = sorted(p for p in REQUESTS.iterdir() if p.suffix in {".json", ".yaml"}) + sorted(
    EXAMPLES.glob("hello-*.yaml")
)
# Those already in the current form (schema 1.0.7, current kind URIs), which validate as written.
CURRENT = {"example-b-docker-volume.yaml", "hello-notebook.yaml", "hello-command.yaml"}


def broker_schema(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", "schema", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@cache
def printed(*args: str) -> dict[str, Any]:
    result = broker_schema(*args)
    assert result.returncode == 0, result.stderr
    schema: dict[str, Any] = json.loads(result.stdout)
    Draft202012Validator.check_schema(schema)
    return schema


def errors(schema: dict[str, Any], document: Any) -> list[str]:
    return [error.message for error in Draft202012Validator(schema).iter_errors(document)]


def test_the_documents_are_all_there() -> None:
    names = {path.name for path in DOCUMENTS}
    assert names >= CURRENT
    assert {"legacy-earlier-form-notebook.yaml", "legacy-v1.0-top-level-volumes.yaml"} <= names


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_the_printed_schema_validates_each_request_document(path: Path) -> None:
    schema = printed()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    document = read_request_file(path)
    if path.name in CURRENT:
        assert errors(schema, document) == []
    # What the broker reads (older kind URIs and older forms translated): the current form.
    request = parse_execution_request(document)
    translated = to_jsonable(request)
    translated.pop("translated", None)  # the broker's own note, not part of the document
    assert errors(schema, translated) == []


def test_the_printed_schema_rejects_a_broken_document() -> None:
    schema = printed()
    document = read_request_file(REQUESTS / "example-b-docker-volume.yaml")
    document["compute"]["cores"] = {"min": "two"}
    document["executable"]["image"] = {"digest": "sha256:00"}  # no locations
    found = errors(schema, document)
    assert found, "a broken document must not validate"
    document = read_request_file(REQUESTS / "example-b-docker-volume.yaml")
    document["executable"]["kind"] = "https://example.org/kinds/no-such-executable.yaml"
    assert errors(schema, document)


def test_one_component_by_name_or_kind() -> None:
    docker = printed("--kind", "DockerContainer")
    # The same component by its kind URI, an older alias of it, or the family/name part.
    old = "https://www.purl.org/ivoa.net/EB/schema/types/executable/docker-container-1.0"
    for asked in (DOCKER_CONTAINER_KIND, old, "executable/docker-container", "dockercontainer"):
        assert json_schema(asked) == docker, asked
    container = read_request_file(REQUESTS / "example-b-docker-volume.yaml")["executable"]
    assert errors(docker, container) == []
    assert errors(docker, {**container, "image": {"locations": "not a list"}})
    family = json_schema("executable")
    assert errors(family, container) == []
    assert errors(family, {**container, "kind": "urn:nothing"})
    message = json_schema("MessageItem")
    assert errors(message, {"kind": "urn:x", "level": "WARN", "message": "m"}) == []
    assert errors(message, {"kind": "urn:x", "level": "LOUD"})


def test_an_unknown_kind_lists_the_known_ones() -> None:
    result = broker_schema("--kind", "quantum-computer")
    assert result.returncode == 2
    assert result.stdout == ""
    text = " ".join(result.stderr.split())
    assert "'quantum-computer'" in text
    for name in ("DockerContainer", "SimpleComputeResource", "executable", "MessageItem"):
        assert name in text
    with pytest.raises(UnknownComponent):
        component("https://www.purl.org/ivoa.net/EB/schema/types/executable/no-such-1.0")


def test_every_listed_component_has_a_schema() -> None:
    for name in COMPONENTS:
        schema = json_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert {"properties", "oneOf"} & set(schema), name
    Draft202012Validator.check_schema(json_schema("data"))


def test_the_models_import_nothing_of_the_bus_or_the_services() -> None:
    code = (
        "import sys, shared.models, shared.models.schema, shared.models.legacy\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'nats', 'services', 'httpx', 'sqlite3', 'aiosqlite', 'fastapi'} "
        "or m.startswith(('shared.bus', 'shared.ops', 'shared.client')))\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
