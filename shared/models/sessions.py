"""Request and response roots: ExecutionRequest, sessions (offers) and the offer set."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, ConfigDict
from pydantic.json_schema import SkipJsonSchema

from shared.models.base import KindNormaliser, UtcDateTime, WireModel, one_of
from shared.models.common import (
    Component,
    CostItem,
    LifecycleSchedule,
    MetricItem,
    RequestedScheduleBlock,
    SessionPhase,
)
from shared.models.executables import Executable
from shared.models.kinds import OFFERSET_KIND, SCHEDULED_SESSION_KIND, SESSION_KINDS
from shared.models.limits import MAX_ANSWER_BYTES, MAX_COMPONENTS, MAX_ITEMS, MAX_MESSAGES, at_most
from shared.models.messages import MessageItem
from shared.models.resources import ComputeResource, DataResource, StorageResource
from shared.models.serialise import DOCUMENT_LIMITS


class ExecutionRequest(WireModel):
    """The body of `POST /requests` (and `/direct`)."""

    # Refused whole past these (HTTP 413 or 422, or `NO` on the bus), before any field is read.
    model_config = ConfigDict(json_schema_extra=dict(DOCUMENT_LIMITS))

    executable: Executable | None = None
    compute: ComputeResource | None = None
    storage: Annotated[list[StorageResource] | None, at_most(MAX_COMPONENTS)] = None
    data: Annotated[list[DataResource] | None, at_most(MAX_COMPONENTS)] = None
    schedule: RequestedScheduleBlock | None = None
    #: Cost constraints the client asks for.
    costs: Annotated[list[CostItem] | None, at_most(MAX_ITEMS)] = None
    #: Metric requirements the client asks for.
    metrics: Annotated[list[MetricItem] | None, at_most(MAX_ITEMS)] = None
    #: What the parser translated from an older generation of the schema (`shared.models.legacy`), as
    #: WARN messages for the answer: kept with the request until its offer set is built. Never read
    #: from a client's document (the parser drops the key) and not part of the published schema.
    translated: SkipJsonSchema[list[MessageItem] | None] = None


class SimpleSessionConnector(WireModel):
    kind: str | None = None
    status: Literal["PREPARING", "AVAILABLE", "FINISHED"] | None = None
    protocol: str | None = None
    location: str | None = None


class ScheduledExecutionSession(Component):
    # The Java server labels scheduled sessions with the *simple* kind; accept both when reading.
    kind: Annotated[str, KindNormaliser, one_of(SESSION_KINDS)] = SCHEDULED_SESSION_KIND
    phase: SessionPhase | None = None
    #: Only meaningful while the session is OFFERED.
    expires: UtcDateTime | None = None
    executable: Executable | None = None
    compute: ComputeResource | None = None
    storage: list[StorageResource] | None = None
    data: list[DataResource] | None = None
    connectors: list[SimpleSessionConnector] | None = None
    schedule: LifecycleSchedule | None = None


def _yaml_bool_to_answer(value: object) -> object:
    # A YAML 1.1 parser other than ours reads an unquoted NO/YES as a boolean.
    if isinstance(value, bool):
        return "YES" if value else "NO"
    return value


class OfferSetResponse(Component):
    # What an answer may hold (`shared.models.limits`): past the size it is a `NO` saying so.
    model_config = ConfigDict(
        json_schema_extra={
            "x-max-bytes": MAX_ANSWER_BYTES,
            "description": f"The answer to a request: at most {MAX_ANSWER_BYTES} bytes, and at most "
            f"{MAX_MESSAGES} problems in `meta.messages` (one more message counts the rest).",
        }
    )

    kind: Annotated[str, KindNormaliser, one_of(frozenset({OFFERSET_KIND}))] = OFFERSET_KIND
    #: YES: one or more offers; NO: `meta.messages` say why.
    result: Annotated[Literal["YES", "NO"], BeforeValidator(_yaml_bool_to_answer)]
    description: str | None = None
    offers: list[ScheduledExecutionSession] | None = None
