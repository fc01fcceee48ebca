"""The component envelope (`meta`), schedules, options, updates, costs and metrics."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag

from shared import iso8601
from shared.lifecycle import Phase
from shared.models.base import (
    KindNormaliser,
    StrictFloat,
    StrictInt,
    UncheckedInt,
    UtcDateTime,
    WireModel,
    one_of,
)
from shared.models.kinds import (
    COST_KINDS,
    ENUM_VALUE_OPTION_KIND,
    ENUM_VALUE_UPDATE_KIND,
    INTEGER_DELTA_OPTION_KIND,
    INTEGER_DELTA_UPDATE_KIND,
    INTEGER_VALUE_OPTION_KIND,
    INTEGER_VALUE_UPDATE_KIND,
    METRIC_KINDS,
    SIMPLE_MINMAX_FLOAT_COST_KIND,
    SIMPLE_MINMAX_FLOAT_METRIC_KIND,
    STRING_VALUE_OPTION_KIND,
    STRING_VALUE_UPDATE_KIND,
    normalise_kind,
)
from shared.models.limits import MAX_DURATION, MAX_ITEMS, at_most
from shared.models.messages import MessageItem
from shared.models.serialise import DOCUMENT_LIMITS


class LifecyclePhase(StrEnum):
    """Phase of one component (executable, compute, storage, data)."""

    INITIALIZING = "INITIALIZING"
    WAITING = "WAITING"
    PREPARING = "PREPARING"
    AVAILABLE = "AVAILABLE"
    RUNNING = "RUNNING"
    RELEASING = "RELEASING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


# The session's phases are the lifecycle's: one enum, so the wire model and the state machine agree.
SessionPhase = Phase


def kind_discriminator(value: Any) -> str | None:
    """Discriminator helper: read `kind` from a raw mapping or a model, in its current form."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return normalise_kind(kind) if isinstance(kind, str) else None


# -- options and updates ---------------------------------------------------------------------------


class StringValueOption(WireModel):
    kind: Literal["uri:string-value-option"] = STRING_VALUE_OPTION_KIND
    path: str
    pattern: str | None = None


class EnumValueOption(WireModel):
    kind: Literal["uri:enum-value-option"] = ENUM_VALUE_OPTION_KIND
    path: str
    values: list[str]


class IntegerValueOption(WireModel):
    kind: Literal["uri:integer-value-option"] = INTEGER_VALUE_OPTION_KIND
    path: str
    min: StrictInt | None = None
    max: StrictInt | None = None
    units: str | None = None


class IntegerDeltaOption(WireModel):
    kind: Literal["uri:integer-delta-option"] = INTEGER_DELTA_OPTION_KIND
    path: str
    min: StrictInt | None = None
    max: StrictInt | None = None
    units: str | None = None


Option = Annotated[
    Annotated[StringValueOption, Tag(STRING_VALUE_OPTION_KIND)]
    | Annotated[EnumValueOption, Tag(ENUM_VALUE_OPTION_KIND)]
    | Annotated[IntegerValueOption, Tag(INTEGER_VALUE_OPTION_KIND)]
    | Annotated[IntegerDeltaOption, Tag(INTEGER_DELTA_OPTION_KIND)],
    Discriminator(kind_discriminator),
]


class StringValueUpdate(WireModel):
    kind: Literal["uri:string-value-update"] = STRING_VALUE_UPDATE_KIND
    path: str
    value: str


class EnumValueUpdate(WireModel):
    """The body of `POST /sessions/{uuid}`: e.g. `path: phase`, `value: ACCEPTED`."""

    model_config = ConfigDict(json_schema_extra=dict(DOCUMENT_LIMITS))

    kind: Literal["uri:enum-value-update"] = ENUM_VALUE_UPDATE_KIND
    path: str
    value: str


class IntegerValueUpdate(WireModel):
    kind: Literal["uri:integer-value-update"] = INTEGER_VALUE_UPDATE_KIND
    path: str
    value: StrictInt
    units: str | None = None


class IntegerDeltaUpdate(WireModel):
    kind: Literal["uri:integer-delta-update"] = INTEGER_DELTA_UPDATE_KIND
    path: str
    delta: StrictInt
    units: str | None = None


Update = Annotated[
    Annotated[StringValueUpdate, Tag(STRING_VALUE_UPDATE_KIND)]
    | Annotated[EnumValueUpdate, Tag(ENUM_VALUE_UPDATE_KIND)]
    | Annotated[IntegerValueUpdate, Tag(INTEGER_VALUE_UPDATE_KIND)]
    | Annotated[IntegerDeltaUpdate, Tag(INTEGER_DELTA_UPDATE_KIND)],
    Discriminator(kind_discriminator),
]


# -- costs and metrics ----------------------------------------------------------------------------


class SimpleMinMaxFloatCost(WireModel):
    # The abstract kind is itself a valid mapping key in the schema, so accept it here too.
    kind: Annotated[str, KindNormaliser, one_of(COST_KINDS)] = SIMPLE_MINMAX_FLOAT_COST_KIND
    type: str | None = None
    description: str | None = None
    min: StrictFloat | None = None
    max: StrictFloat | None = None


class SimpleMinMaxFloatMetric(WireModel):
    kind: Annotated[str, KindNormaliser, one_of(METRIC_KINDS)] = SIMPLE_MINMAX_FLOAT_METRIC_KIND
    type: str | None = None
    description: str | None = None
    min: StrictFloat | None = None
    max: StrictFloat | None = None


CostItem = SimpleMinMaxFloatCost
MetricItem = SimpleMinMaxFloatMetric


# -- envelope -------------------------------------------------------------------------------------


class ComponentMetadata(WireModel):
    uuid: str | None = None
    name: str | None = None
    url: str | None = None
    description: str | None = None
    created: UtcDateTime | None = None
    modified: UtcDateTime | None = None
    messages: Annotated[list[MessageItem] | None, at_most(MAX_ITEMS)] = None
    options: Annotated[list[Option] | None, at_most(MAX_ITEMS)] = None


class MinMax(WireModel):
    """`min`/`max` pair: cores (count), memory and storage size (GiB); the request parser bounds
    each by what it counts (`shared.models.limits`)."""

    min: UncheckedInt | None = None
    max: UncheckedInt | None = None


# -- schedules: ISO-8601 values stay strings on the wire; shared.iso8601 interprets them -------------

#: A duration as the request writes it; the offers service refuses one longer than `MAX_DURATION`.
Duration = Annotated[
    str | None,
    Field(description=f"An ISO-8601 duration of at most {iso8601.format_duration(MAX_DURATION)}"),
]


class StartDurationInstant(WireModel):
    start: str | None = None
    duration: Duration = None


class StartDurationInterval(WireModel):
    start: str | None = None
    duration: Duration = None


class LifecycleSchedule(WireModel):
    preparing: StartDurationInstant | None = None
    available: StartDurationInterval | None = None
    releasing: StartDurationInstant | None = None


class RequestedScheduleItem(WireModel):
    start: str | None = None
    duration: Duration = None


class RequestedScheduleBlock(WireModel):
    requested: RequestedScheduleItem | None = None


class Component(WireModel):
    """Fields shared by every component; subclasses narrow `kind` to their own URI(s)."""

    # Declared here so that `kind` comes first in every serialised component.
    kind: str
    meta: ComponentMetadata | None = None
    costs: Annotated[list[CostItem] | None, at_most(MAX_ITEMS)] = None
    metrics: Annotated[list[MetricItem] | None, at_most(MAX_ITEMS)] = None


class LifecycleComponent(Component):
    phase: LifecyclePhase | None = None
    schedule: LifecycleSchedule | None = None


__all__ = [
    "Component",
    "ComponentMetadata",
    "CostItem",
    "EnumValueOption",
    "EnumValueUpdate",
    "IntegerDeltaOption",
    "IntegerDeltaUpdate",
    "IntegerValueOption",
    "IntegerValueUpdate",
    "LifecycleComponent",
    "LifecyclePhase",
    "LifecycleSchedule",
    "MetricItem",
    "MinMax",
    "Option",
    "RequestedScheduleBlock",
    "RequestedScheduleItem",
    "SessionPhase",
    "SimpleMinMaxFloatCost",
    "SimpleMinMaxFloatMetric",
    "StartDurationInstant",
    "StartDurationInterval",
    "StringValueOption",
    "StringValueUpdate",
    "Update",
    "UtcDateTime",
]
