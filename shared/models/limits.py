"""Every number and every list a client may send has a limit, checked when the request is parsed.

Why: a number is only safe once it is bounded. `content_length: 10**300` once passed validation and
raised `OverflowError` deep in the scheduler, leaving the request unanswered; 80,000 bad data items
gave a 19.9 MB offer set that the bus could not carry. The limits are far above any real request and
far below where arithmetic (a `timedelta`, a float, an SQLite integer) or the bus's 1 MiB payload
breaks; each refusal names the field and the limit (`shared.models.parsing`).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BeforeValidator, Strict
from pydantic_core import PydanticCustomError

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


def at_most(limit: int) -> BeforeValidator:
    """A list of at most ``limit`` items, counted before any item is validated, so a huge list costs
    one message, not one per bad item."""

    def check(value: Any) -> Any:
        if isinstance(value, list | dict) and len(value) > limit:
            raise PydanticCustomError(
                "too_many_items",
                "{count} items, more than the limit of {limit}",
                {"count": len(value), "limit": limit},
            )
        return value

    return BeforeValidator(check)


#: A strict integer (never "5" or true) within the signed 64-bit range.
BoundedInt = Annotated[int, Strict(), _bounded_int(-MAX_INTEGER, MAX_INTEGER, "")]
#: A size in bytes.
ByteCount = Annotated[int, Strict(), _bounded_int(-MAX_INTEGER, MAX_BYTES, " bytes")]
#: A TCP or UDP port.
PortNumber = Annotated[int, Strict(), _bounded_int(0, 65535, "")]
#: A strict, finite float of bounded size.
BoundedFloat = Annotated[float, Strict(), AfterValidator(_finite)]
#: The largest answer (offer set) a service publishes: the bus carries at most 1 MiB (nats-server's
#: default `max_payload`), and headers, a trace context and a stream's own overhead need some room.
MAX_ANSWER_BYTES: Final = 768 * 1024
