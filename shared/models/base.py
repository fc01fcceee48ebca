"""Shared pydantic configuration and field types for the wire models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, Strict
from pydantic_core import PydanticCustomError

from shared.models.kinds import normalise_kind
from shared.models.limits import BoundedFloat, BoundedInt


def _as_utc(value: datetime) -> datetime:
    # A naive time on the wire has no zone to honour; the broker works in UTC throughout.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """ISO-8601 in UTC with a `Z` suffix, the form the reference server writes."""
    return _as_utc(value).isoformat().replace("+00:00", "Z")


#: A timezone-aware UTC datetime that serialises as `...Z` in JSON/YAML.
UtcDateTime = Annotated[
    datetime,
    AfterValidator(_as_utc),
    PlainSerializer(format_datetime, return_type=str, when_used="json"),
]

# Strict scalars: lax pydantic would turn "5" into 5 or "yes" into True, hiding client mistakes
# that the broker should report as `urn:invalid-value`. Numbers are bounded too (shared.models.limits).
StrictInt = BoundedInt
StrictFloat = BoundedFloat
#: A strict integer whose bounds its context sets (cores, GiB: `parsing._check_semantics` names them).
UncheckedInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]


def _normalise_kind_input(value: Any) -> Any:
    return normalise_kind(value) if isinstance(value, str) else value


#: Applied to every `kind` field so that old alias URIs are stored in their current form.
KindNormaliser = BeforeValidator(_normalise_kind_input)


class WireModel(BaseModel):
    """Base of every schema model.

    Unknown fields are ignored (newer clients may send fields this schema version lacks) and
    fields can be populated by name or alias.
    """

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def one_of(kinds: frozenset[str]) -> AfterValidator:
    """Validator restricting a `kind` field to some (already normalised) URIs."""

    def check(value: str) -> str:
        if value not in kinds:
            # A dedicated error type lets the request parser report `uri:unknown-type`.
            raise PydanticCustomError("unknown_kind", "unknown kind [{kind}]", {"kind": value})
        return value

    return AfterValidator(check)
