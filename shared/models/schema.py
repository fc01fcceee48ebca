"""The data model's JSON Schema, whole or one component at a time (`broker schema`, docs/models.md).

Other SRCNet services reuse the broker's components (an executable, a compute resource, a data
resource, a schedule, a message …): this names each one and writes its JSON Schema (draft 2020-12),
self-contained (`$defs`), with each IVOA union's variants told apart by their current `kind` URI.
The schema describes the current form (schema 1.0.7): the broker also accepts older kind URIs and
the older document forms (`shared.models.legacy`), and translates them before validating.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from shared.models.common import (
    ComponentMetadata,
    EnumValueOption,
    EnumValueUpdate,
    IntegerDeltaOption,
    IntegerDeltaUpdate,
    IntegerValueOption,
    IntegerValueUpdate,
    LifecycleSchedule,
    Option,
    RequestedScheduleBlock,
    SimpleMinMaxFloatCost,
    SimpleMinMaxFloatMetric,
    StringValueOption,
    StringValueUpdate,
    Update,
    kind_discriminator,
)
from shared.models.executables import (
    DockerContainer,
    Executable,
    JupyterNotebook,
    LocalCommand,
    SingularityContainer,
)
from shared.models.kinds import KIND_BASE, normalise_kind
from shared.models.messages import MessageItem
from shared.models.resources import (
    ComputeResource,
    DataResource,
    IvoaDataResource,
    RucioDataResource,
    S3DataResource,
    SimpleComputeResource,
    SimpleDataResource,
    SimpleStorageResource,
    SimpleVolumeMount,
    SkaoDataResource,
    StorageResource,
    VolumeMount,
)
from shared.models.sessions import ExecutionRequest, OfferSetResponse, ScheduledExecutionSession

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


class KindedSchemas(GenerateJsonSchema):
    """pydantic's JSON Schema, with the variants of each IVOA union told apart by their ``kind``.

    The models choose a variant with a function (`kind_discriminator`, which first maps old kind URIs
    to current ones), and pydantic writes such a union as a bare ``oneOf``: a document that fits
    several variants' shapes would match none. Here each variant also requires its current kind, so
    exactly one matches (the broker also accepts the older aliases of a kind; the schema names the
    current ones).
    """

    def tagged_union_schema(self, schema: core_schema.TaggedUnionSchema) -> JsonSchemaValue:
        if schema["discriminator"] is not kind_discriminator:
            return super().tagged_union_schema(schema)
        return {
            "oneOf": [
                {
                    "allOf": [
                        self.generate_inner(choice),
                        {"properties": {"kind": {"const": tag}}, "required": ["kind"]},
                    ]
                }
                for tag, choice in schema["choices"].items()
            ]
        }


_CONCRETE: Final[tuple[type[BaseModel], ...]] = (
    ExecutionRequest,
    OfferSetResponse,
    ScheduledExecutionSession,
    JupyterNotebook,
    DockerContainer,
    SingularityContainer,
    LocalCommand,
    SimpleComputeResource,
    SimpleStorageResource,
    SimpleVolumeMount,
    SimpleDataResource,
    S3DataResource,
    RucioDataResource,
    IvoaDataResource,
    SkaoDataResource,
    ComponentMetadata,
    RequestedScheduleBlock,
    LifecycleSchedule,
    MessageItem,
    SimpleMinMaxFloatCost,
    SimpleMinMaxFloatMetric,
    StringValueOption,
    EnumValueOption,
    IntegerValueOption,
    IntegerDeltaOption,
    StringValueUpdate,
    EnumValueUpdate,
    IntegerValueUpdate,
    IntegerDeltaUpdate,
)

#: Every component by name: the concrete models by class name, each family (any of its kinds) by
#: its name in the schema's kind URIs.
COMPONENTS: Final[Mapping[str, Any]] = {
    **{model.__name__: model for model in _CONCRETE},
    "executable": Executable,
    "compute": ComputeResource,
    "storage": StorageResource,
    "data": DataResource,
    "volume": VolumeMount,
    "option": Option,
    "update": Update,
}

# Kind URI (current form) -> the model that has it.
_BY_KIND: Final[Mapping[str, type[BaseModel]]] = {
    field.default: model
    for model in _CONCRETE
    if (field := model.model_fields.get("kind")) is not None and isinstance(field.default, str)
}
_BY_LOWER_NAME: Final = {name.lower(): name for name in COMPONENTS}


class UnknownComponent(LookupError):
    """No component has that name or kind; the message lists the names there are."""

    def __init__(self, asked: str) -> None:
        self.asked = asked
        self.known = sorted(COMPONENTS, key=str.lower)
        super().__init__(
            f"no component is named or has the kind {asked!r}; known names: {', '.join(self.known)} "
            f"(or a kind URI such as {KIND_BASE}executable/docker-container.yaml, or its "
            "'executable/docker-container' part)"
        )


def component(asked: str) -> Any:
    """The model (or family union) named `asked`: a name of `COMPONENTS` (any case), a kind URI (older
    aliases too), or the `family/name` part of a current kind URI."""
    name = _BY_LOWER_NAME.get(asked.strip().lower())
    if name is not None:
        return COMPONENTS[name]
    for uri in (asked.strip(), f"{KIND_BASE}{asked.strip().strip('/')}.yaml"):
        model = _BY_KIND.get(normalise_kind(uri))
        if model is not None:
            return model
    raise UnknownComponent(asked)


def json_schema(asked: str | None = None) -> dict[str, Any]:
    """The JSON Schema of the request document (`asked` None) or of one component (see `component`)."""
    target = ExecutionRequest if asked is None else component(asked)
    schema = TypeAdapter(target).json_schema(schema_generator=KindedSchemas, mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}
