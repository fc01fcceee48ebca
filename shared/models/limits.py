"""Every number and every list a client may send has a limit, checked when the request is parsed.

Why: a number is only safe once it is bounded. `content_length: 10**300` once passed validation and
raised `OverflowError` deep in the scheduler, leaving the request unanswered; 80,000 bad data items
gave a 19.9 MB offer set that the bus could not carry. The limits are far above any real request and
far below where arithmetic (a `timedelta`, a float, an SQLite integer) or the bus's 1 MiB payload
breaks; each refusal names the field and the limit (`shared.models.parsing`).

Each check also states its bound in the JSON schema the broker publishes (`Stated`: ``maximum``,
``minimum``, ``maxItems``, ``maxProperties``), from the same constant. The checks stay functions of
their own rather than pydantic's ``le``/``max_length`` constraints because those answer with
pydantic's generic text, and a client is told which field passed which limit in the broker's words.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, GetJsonSchemaHandler, Strict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

#: Cores a request may ask for: more than the largest machine or pool anyone runs.
MAX_CORES: Final = 1_000_000
#: Memory and storage in GiB: an exbibyte.
MAX_GIB: Final = 1_000_000_000
#: Sizes in bytes (`content_length`, `datasize`): an exabyte.
MAX_BYTES: Final = 10**18
#: Any other integer of the wire models: SQLite's (and JSON's common) signed 64-bit range.
MAX_INTEGER: Final = 2**63 - 1
#: Any float of the wire models (costs, metrics), which must also be finite.
MAX_FLOAT: Final = 1e18
#: A requested duration: 100 years of 365.25 days.
MAX_DURATION: Final = timedelta(days=36525)
#: Data items, storage resources, volumes: what fits four offers of it in one bus message.
MAX_COMPONENTS: Final = 256
#: Any other list (costs, metrics, replicas, messages, options, image locations, ports …).
MAX_ITEMS: Final = 64
#: Arguments of a command and variables of an environment.
MAX_ARGUMENTS: Final = 4096
#: Problems listed in one answer; the rest are counted in one more message.
MAX_MESSAGES: Final = 50


#: The JSON types each stated keyword constrains; in a union (``list[...] | None``) it goes on the
#: branch of that type, where a validator reading the schema applies it.
_KEYWORD_TYPES: Final[Mapping[str, frozenset[str]]] = {
    "minimum": frozenset({"integer", "number"}),
    "maximum": frozenset({"integer", "number"}),
    "maxItems": frozenset({"array"}),
    "maxProperties": frozenset({"object"}),
    "properties": frozenset({"object", "$ref"}),
}


@dataclass(frozen=True, eq=False)  # hashed by identity: typing hashes Annotated metadata
class Stated:
    """A bound written into the JSON schema of the annotated type, beside the check that enforces it.

    ``properties`` bounds the fields of an object (a `MinMax` whose limits its field sets): a
    referenced model is wrapped as ``allOf: [$ref]`` with the bounds beside it, which JSON Schema
    draft 7 (AsyncAPI) and 2020-12 (OpenAPI 3.1) both read.
    """

    keywords: Mapping[str, Any] = field(default_factory=dict)

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return _state(handler(core), self.keywords)


def _state(schema: JsonSchemaValue, keywords: Mapping[str, Any]) -> JsonSchemaValue:
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches is not None:
        return {
            **schema,
            ("anyOf" if "anyOf" in schema else "oneOf"): [_state(b, keywords) for b in branches],
        }
    kind = "$ref" if "$ref" in schema else schema.get("type")
    own = {k: v for k, v in keywords.items() if kind in _KEYWORD_TYPES[k]}
    if not own:
        return schema
    if kind == "$ref":
        return {"allOf": [schema], "type": "object", **own}
    return {**schema, **own}


def _bounded_int(low: int, high: int, unit: str) -> AfterValidator:
    def check(value: int) -> int:
        if value > high:
            raise PydanticCustomError(
                "number_too_large", "must be at most {limit}{unit}", {"limit": high, "unit": unit}
            )
        if value < low:
            raise PydanticCustomError(
                "number_too_small", "must be at least {limit}{unit}", {"limit": low, "unit": unit}
            )
        return value

    return AfterValidator(check)


def _finite(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_FLOAT:
        raise PydanticCustomError(
            "number_too_large", "must be a finite number between -{limit} and {limit}", {"limit": MAX_FLOAT}
        )
    return value


@dataclass(frozen=True)
class _AtMost(BeforeValidator):
    limit: int = 0

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return _state(handler(core), {"maxItems": self.limit, "maxProperties": self.limit})


def at_most(limit: int) -> BeforeValidator:
    """A list (or mapping) of at most ``limit`` items, counted before any item is validated, so a huge
    list costs one message, not one per bad item; the schema says ``maxItems`` (``maxProperties``)."""

    def check(value: Any) -> Any:
        if isinstance(value, list | dict) and len(value) > limit:
            raise PydanticCustomError(
                "too_many_items",
                "{count} items, more than the limit of {limit}",
                {"count": len(value), "limit": limit},
            )
        return value

    return _AtMost(check, limit=limit)


def between(low: float, high: float) -> Stated:
    return Stated({"minimum": low, "maximum": high})


def pair_between(low: int, high: int) -> Stated:
    """The bounds of both fields of a `MinMax`, which `shared.models.parsing` checks in context."""
    return Stated({"properties": {"min": between(low, high).keywords, "max": between(low, high).keywords}})


#: A strict integer (never "5" or true) within the signed 64-bit range.
BoundedInt = Annotated[
    int, Strict(), _bounded_int(-MAX_INTEGER, MAX_INTEGER, ""), between(-MAX_INTEGER, MAX_INTEGER)
]
#: A size in bytes.
ByteCount = Annotated[
    int, Strict(), _bounded_int(-MAX_INTEGER, MAX_BYTES, " bytes"), between(-MAX_INTEGER, MAX_BYTES)
]
#: A TCP or UDP port.
MAX_PORT: Final = 65535
PortNumber = Annotated[int, Strict(), _bounded_int(0, MAX_PORT, ""), between(0, MAX_PORT)]


def _port_in_range(value: int) -> int:
    if not 1 <= value <= MAX_PORT:
        raise PydanticCustomError(
            "port_out_of_range", "must be a port number from 1 to {limit}", {"limit": MAX_PORT}
        )
    return value


#: A port a container listens on: 0 means "any port" to a socket, which nothing can publish, and
#: every platform refuses one outside 1-65535 at launch; so the request is refused when it is parsed.
ContainerPort = Annotated[int, Strict(), AfterValidator(_port_in_range), between(1, MAX_PORT)]
#: A strict, finite float of bounded size.
BoundedFloat = Annotated[float, Strict(), AfterValidator(_finite), between(-MAX_FLOAT, MAX_FLOAT)]
#: The largest answer (offer set) a service publishes: the bus carries at most 1 MiB (nats-server's
#: default `max_payload`), and headers, a trace context and a stream's own overhead need some room.
MAX_ANSWER_BYTES: Final = 768 * 1024
