"""Validate documents against the published Calycopis OpenAPI schema files (JSON Schema 2020-12).

OpenAPI 3.1 `discriminator` mappings are not JSON Schema, so a polymorphic field is only checked
against its abstract `allOf` shape; `validate_against` therefore also validates every nested
object whose `kind` names a concrete type against that type's own schema in `kinds/**`.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from shared.models import KIND_BASE

# An artificial base URI: the files' relative `$ref`s (`./`, `../../`) resolve against it.
_BASE = "https://schema.invalid/openapi/"

#: Concrete `kind` -> schema name. The schema lives in `kinds/<suffix of the kind>` when that file
#: exists (the kind URI *is* the file's URL), otherwise in components.yaml.
CONCRETE_SCHEMAS: dict[str, str] = {
    KIND_BASE + "executable/jupyter-notebook.yaml": "JupyterNotebook",
    KIND_BASE + "executable/docker-container.yaml": "DockerContainer",
    KIND_BASE + "executable/singularity-container.yaml": "SingularityContainer",
    KIND_BASE + "compute/simple-compute-resource.yaml": "SimpleComputeResource",
    KIND_BASE + "storage/simple-storage-resource.yaml": "SimpleStorageResource",
    KIND_BASE + "volume/simple-volume-mount.yaml": "SimpleVolumeMount",
    KIND_BASE + "data/simple-data-resource.yaml": "SimpleDataResource",
    KIND_BASE + "data/S3-data-resource.yaml": "S3DataResource",
    KIND_BASE + "data/rucio-data-resource.yaml": "RucioDataResource",
    KIND_BASE + "data/ivoa-data-resource.yaml": "IvoaDataResource",
    KIND_BASE + "data/skao-data-resource.yaml": "SkaoDataResource",
    KIND_BASE + "costs/simple-minmax-float-cost.yaml": "SimpleMinMaxFloatCost",
    KIND_BASE + "costs/abstract-cost-item.yaml": "AbstractCostItem",
    KIND_BASE + "metrics/simple-minmax-float-metric.yaml": "SimpleMinMaxFloatMetric",
    KIND_BASE + "metrics/abstract-metric-item.yaml": "AbstractMetricItem",
    KIND_BASE + "session/simple-execution-session.yaml": "SimpleExecutionSession",
    KIND_BASE + "session/scheduled-execution-session.yaml": "ScheduledExecutionSession",
    # The offer set has no kinds file; its shape is OfferSetResponse.
    KIND_BASE + "offerset/execution-offerset.yaml": "OfferSetResponse",
    "uri:string-value-option": "StringValueOption",
    "uri:enum-value-option": "EnumValueOption",
    "uri:integer-value-option": "IntegerValueOption",
    "uri:integer-delta-option": "IntegerDeltaOption",
    "uri:string-value-update": "StringValueUpdate",
    "uri:enum-value-update": "EnumValueUpdate",
    "uri:integer-value-update": "IntegerValueUpdate",
    "uri:integer-delta-update": "IntegerDeltaUpdate",
}


def shared_dir() -> Path:
    """The published reference folder: ``$EB_SHARED_DIR``, else ``shared`` beside the repository."""
    override = os.environ.get("EB_SHARED_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared"


def openapi_dir() -> Path:
    return shared_dir() / "reference" / "openapi"


def schemas_present() -> bool:
    return (openapi_dir() / "components.yaml").is_file()


# A clone with nothing beside it has no schema files: the tests that check documents against them
# skip there (CI has the folder beside the clone, so they run there), every other test still runs.
requires_schemas = pytest.mark.skipif(
    not schemas_present(),
    reason=f"published OpenAPI schema files not found in {openapi_dir()} (set EB_SHARED_DIR)",
)


@cache
def _files() -> dict[str, dict[str, Any]]:
    root = openapi_dir()
    if not schemas_present():
        raise FileNotFoundError(f"OpenAPI schema files not found in {root} (set EB_SHARED_DIR)")
    return {
        path.relative_to(root).as_posix(): yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted(root.rglob("*.yaml"))
    }


@cache
def registry() -> Registry[Any]:
    resources = [(_BASE + name, DRAFT202012.create_resource(contents)) for name, contents in _files().items()]
    return Registry().with_resources(resources)


def _file_for(schema_name: str) -> str:
    for name, contents in _files().items():
        if schema_name in ((contents.get("components") or {}).get("schemas") or {}):
            return name
    raise KeyError(f"no schema named {schema_name!r} in {openapi_dir()}")


def _validator(file: str, schema_name: str) -> Draft202012Validator:
    schema = {"$ref": f"{_BASE}{file}#/components/schemas/{schema_name}"}
    return Draft202012Validator(
        schema, registry=registry(), format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def _concrete_errors(document: Any, path: str) -> list[str]:
    errors: list[str] = []
    if isinstance(document, dict):
        kind = document.get("kind")
        if isinstance(kind, str) and kind in CONCRETE_SCHEMAS:
            name = CONCRETE_SCHEMAS[kind]
            file = "kinds/" + kind.removeprefix(KIND_BASE)
            if file not in _files():
                file = "components.yaml"
            found = _validator(file, name).iter_errors(document)
            errors += [f"{path}{_where(e)}: {e.message} (as {name})" for e in found]
        elif isinstance(kind, str) and kind.startswith(KIND_BASE):
            errors.append(f"{path}: kind {kind!r} has no schema in kinds/**")
        for key, value in document.items():
            errors += _concrete_errors(value, f"{path}.{key}")
    elif isinstance(document, list):
        for index, item in enumerate(document):
            errors += _concrete_errors(item, f"{path}[{index}]")
    return errors


def _where(error: ValidationError) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def validate_against(schema_name: str, document: dict[str, Any]) -> None:
    """Raise `AssertionError` listing every way `document` breaks `schema_name` or a nested kind."""
    errors = [
        f"${_where(e)}: {e.message}"
        for e in _validator(_file_for(schema_name), schema_name).iter_errors(document)
    ]
    errors += _concrete_errors(document, "$")
    if errors:
        raise AssertionError(f"{schema_name} document does not conform:\n  " + "\n  ".join(errors))
