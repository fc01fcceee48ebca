from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.iso8601 import (
    format_duration,
    format_instant,
    format_interval,
    format_interval_instant,
    parse_duration,
    parse_instant,
    parse_interval,
)

T0 = datetime(2025, 11, 25, 5, 24, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT0S", timedelta(0)),
        ("PT2H", timedelta(hours=2)),
        ("PT10M", timedelta(minutes=10)),
        ("PT1M30S", timedelta(seconds=90)),
        ("PT1M50S", timedelta(seconds=110)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P2W", timedelta(days=14)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT1,25S", timedelta(seconds=1.25)),
        ("P0Y0M1D", timedelta(days=1)),
        ("PT36H", timedelta(hours=36)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("P", "invalid"),
        ("PT", "invalid"),
        ("P1DT", "invalid"),
        ("1H", "invalid"),
        ("PT1H1D", "invalid"),
        ("P1.5D", "invalid"),
        ("pt1h", "invalid"),
        ("PT1H ", "invalid"),
        ("P1W2D", "invalid"),
        ("-PT1H", "negative"),
        ("P1Y", "no fixed length"),
        ("P1M", "no fixed length"),
        ("P99999999999D", "too large"),
    ],
)
def test_parse_duration_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


def test_parse_duration_rejects_non_text() -> None:
    with pytest.raises(ValueError):
        parse_duration(3600)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "PT0S"),
        (timedelta(hours=2), "PT2H"),
        (timedelta(seconds=90), "PT1M30S"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(days=14), "P14D"),
        (timedelta(milliseconds=1500), "PT1.5S"),
        (timedelta(minutes=1, microseconds=1), "PT1M0.000001S"),
    ],
)
def test_format_duration(td: timedelta, text: str) -> None:
    assert format_duration(td) == text


def test_format_duration_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_duration_round_trip(td: timedelta) -> None:
    text = format_duration(td)
    assert parse_duration(text) == td
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-25T05:24:00Z", T0),
        ("2025-11-25T05:24:00z", T0),
        ("2025-11-25T05:24:00+00:00", T0),
        ("2025-11-25T07:24:00+02:00", T0),
        ("2025-11-25T05:24:00", T0),
        ("2025-11-25T05:24:00.000Z", T0),
        ("2025-11-25", datetime(2025, 11, 25, tzinfo=UTC)),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["", "  ", "yesterday", "2025-13-01T00:00:00Z", "2025-11-25T25:00:00Z", "PT1H"]
)
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_format_instant() -> None:
    assert format_instant(T0) == "2025-11-25T05:24:00Z"
    assert format_instant(T0.replace(microsecond=999_999)) == "2025-11-25T05:24:00Z"
    assert format_instant(datetime(2025, 11, 25, 7, 24, tzinfo=timezone(timedelta(hours=2)))) == (
        "2025-11-25T05:24:00Z"
    )
    assert format_instant(datetime(2025, 11, 25, 5, 24)) == "2025-11-25T05:24:00Z"


aware_seconds = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda dt: dt.replace(microsecond=0))


@given(aware_seconds)
def test_instant_round_trip(dt: datetime) -> None:
    assert parse_instant(format_instant(dt)) == dt


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        (
            "2023-08-09T12:00:00Z/2023-08-09T13:00:00Z",
            datetime(2023, 8, 9, 12, tzinfo=UTC),
            datetime(2023, 8, 9, 13, tzinfo=UTC),
        ),
        ("2023-08-09/PT2H", datetime(2023, 8, 9, tzinfo=UTC), datetime(2023, 8, 9, 2, tzinfo=UTC)),
        ("PT2H/2023-08-09", datetime(2023, 8, 8, 22, tzinfo=UTC), datetime(2023, 8, 9, tzinfo=UTC)),
        ("2023-08-09/2023-08-10", datetime(2023, 8, 9, tzinfo=UTC), datetime(2023, 8, 10, tzinfo=UTC)),
        ("2025-11-25T05:24:00Z", T0, T0),
        ("2025-11-25T05:24:00Z/PT0S", T0, T0),
        ("2025-11-25T07:24:00+02:00/PT1H", T0, T0 + timedelta(hours=1)),
    ],
)
def test_parse_interval(text: str, start: datetime, end: datetime) -> None:
    assert parse_interval(text) == (start, end)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("PT2H", "bare duration"),
        ("PT1H/PT2H", "two durations"),
        ("2023-08-10/2023-08-09", "ends before"),
        ("R5/2023-08-09/PT1H", "repeating"),
        ("2023-08-09/", "invalid"),
        ("/2023-08-09", "invalid"),
        ("a/b/c", "invalid"),
        ("2023-08-09/P1Y", "no fixed length"),
        ("2023-08-09/PTX", "invalid"),
        ("nonsense/2023-08-09", "invalid"),
        (
            "0001-01-01T00:00:00Z/PT0S".replace("PT0S", "P1D").replace("0001-01-01", "9999-12-31"),
            "out of range",
        ),
    ],
)
def test_parse_interval_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_interval(text)


def test_format_interval_instant() -> None:
    assert format_interval_instant(T0) == "2025-11-25T05:24:00Z/PT0S"
    assert parse_interval(format_interval_instant(T0)) == (T0, T0)


@given(aware_seconds, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365)))
def test_interval_round_trips(start: datetime, length: timedelta) -> None:
    length = timedelta(seconds=int(length.total_seconds()))
    end = start + length
    assert parse_interval(format_interval(start, end)) == (start, end)
    assert parse_interval(f"{format_instant(start)}/{format_duration(length)}") == (start, end)
    assert parse_interval(f"{format_duration(length)}/{format_instant(end)}") == (start, end)


@given(st.text(max_size=40))
def test_parsers_only_raise_value_error(text: str) -> None:
    for parse in (parse_duration, parse_instant, parse_interval):
        with contextlib.suppress(ValueError):
            parse(text)
