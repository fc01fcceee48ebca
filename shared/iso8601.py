"""ISO-8601 durations, instants and intervals as the Execution Broker schema uses them.

Pure functions: nothing here reads the clock. Every parser raises `ValueError` with a reason
suitable for quoting back to a client (the offers service wraps it in `urn:input-syntax-fail`).

Decisions:

* Durations with a non-zero year or month part are rejected: they have no fixed length, and the
  broker must turn every duration into an exact `timedelta` to book capacity. Days count as
  exactly 24 hours and weeks as 7 days. Zero years/months (`P0Y1D`) are accepted.
* Negative durations (`-PT1H`) are rejected: no schedule field can be negative.
* Instants are returned as timezone-aware UTC datetimes; an instant without a zone is taken to be
  UTC, and a date without a time means midnight UTC.
* Intervals are `start/end`, `start/duration`, `duration/end`, or a single instant meaning an exact
  start (start == end). Date-only ends mean midnight UTC, so `2023-08-09/2023-08-10` is one day.
  Repeating intervals (`R.../...`) are rejected.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

_DURATION: Final = re.compile(
    r"""^P(?!$)
    (?:(?P<years>\d+)Y)?
    (?:(?P<months>\d+)M)?
    (?:(?P<days>\d+)D)?
    (?:T(?=\d)
        (?:(?P<hours>\d+)H)?
        (?:(?P<minutes>\d+)M)?
        (?:(?P<seconds>\d+(?:[.,]\d+)?)S)?
    )?$""",
    re.VERBOSE,
)
_WEEKS: Final = re.compile(r"^P(?P<weeks>\d+)W$")
_MICROSECOND: Final = timedelta(microseconds=1)


def _describe(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def parse_duration(text: str) -> timedelta:
    """`PnDTnHnMnS` or `PnW` -> timedelta. See the module notes for what is rejected."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"empty or non-text duration {_describe(text)}")
    if text.startswith("-"):
        raise ValueError(f"negative duration {_describe(text)} is not allowed")
    try:
        weeks = _WEEKS.match(text)
        if weeks:
            return timedelta(weeks=int(weeks["weeks"]))
        match = _DURATION.match(text)
        # "PT" alone and a trailing "T" are caught by the look-aheads; this catches the rest.
        if not match or text.endswith("T"):
            raise ValueError(
                f"invalid ISO-8601 duration {_describe(text)} (expected e.g. PT2H, PT1M30S, P1DT12H, P2W)"
            )
        if int(match["years"] or 0) or int(match["months"] or 0):
            raise ValueError(
                f"duration {_describe(text)} uses years or months, which have no fixed length;"
                " use days, hours, minutes or seconds instead"
            )
        seconds = Decimal((match["seconds"] or "0").replace(",", "."))
        whole = int(seconds)
        micro = int((seconds - whole) * 1_000_000)
        return timedelta(
            days=int(match["days"] or 0),
            hours=int(match["hours"] or 0),
            minutes=int(match["minutes"] or 0),
            seconds=whole,
            microseconds=micro,
        )
    except (OverflowError, InvalidOperation):
        raise ValueError(f"duration {_describe(text)} is too large") from None


def format_duration(td: timedelta) -> str:
    """Canonical form: `PT0S`, `PT2H`, `PT1M30S`, `P1DT2H`, `PT0.5S`; round-trips with parse."""
    if td < timedelta(0):
        raise ValueError(f"cannot format a negative duration ({td})")
    if td == timedelta(0):
        return "PT0S"
    days = td.days
    hours, rest = divmod(td.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    date_part = f"{days}D" if days else ""
    time_part = ""
    if hours:
        time_part += f"{hours}H"
    if minutes:
        time_part += f"{minutes}M"
    if seconds or td.microseconds:
        if td.microseconds:
            fraction = f"{td.microseconds:06d}".rstrip("0")
            time_part += f"{seconds}.{fraction}S"
        else:
            time_part += f"{seconds}S"
    return "P" + date_part + ("T" + time_part if time_part else "")


def parse_instant(text: str) -> datetime:
    """ISO-8601 date-time (or date) -> aware UTC datetime. `Z` and `+hh:mm` offsets accepted."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty or non-text instant {_describe(text)}")
    candidate = text.strip()
    # Python < 3.11 spelt UTC only as +00:00; 3.11 accepts Z but not a lower-case z.
    if candidate.endswith("z"):
        candidate = candidate[:-1] + "Z"
    try:
        value = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(
            f"invalid ISO-8601 instant {_describe(text)} (expected e.g. 2025-11-25T05:24:00Z)"
        ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"instant {_describe(text)} is out of range") from None


def format_instant(dt: datetime) -> str:
    """`2025-11-25T05:24:00Z`: UTC, whole seconds (sub-second parts are truncated)."""
    value = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return value.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_duration(part: str) -> bool:
    return part.startswith("P")


def parse_interval(text: str) -> tuple[datetime, datetime]:
    """`start/end`, `start/duration`, `duration/end` or a single instant -> (start, end) in UTC."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"empty or non-text interval {_describe(text)}")
    text = text.strip()
    if text.startswith("R"):
        raise ValueError(f"repeating interval {_describe(text)} is not supported")
    parts = text.split("/")
    if len(parts) == 1:
        if _is_duration(text):
            raise ValueError(f"interval {_describe(text)} is a bare duration; it needs a start or an end")
        instant = parse_instant(text)
        return instant, instant
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(
            f"invalid ISO-8601 interval {_describe(text)}"
            " (expected start/end, start/duration or duration/end)"
        )
    first, second = parts
    try:
        if _is_duration(first) and _is_duration(second):
            raise ValueError(f"interval {_describe(text)} has two durations and no anchor instant")
        if _is_duration(first):
            end = parse_instant(second)
            start = end - parse_duration(first)
        elif _is_duration(second):
            start = parse_instant(first)
            end = start + parse_duration(second)
        else:
            start = parse_instant(first)
            end = parse_instant(second)
    except OverflowError:
        raise ValueError(f"interval {_describe(text)} is out of range") from None
    if end < start:
        raise ValueError(f"interval {_describe(text)} ends before it starts")
    return start, end


def format_interval(start: datetime, end: datetime) -> str:
    """`start/end` in UTC, whole seconds."""
    if end < start:
        raise ValueError("interval ends before it starts")
    return f"{format_instant(start)}/{format_instant(end)}"


def format_interval_instant(dt: datetime) -> str:
    """An exact start as the reference server renders `available.start`: `<instant>/PT0S`."""
    return f"{format_instant(dt)}/PT0S"
