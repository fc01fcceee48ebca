"""Every number a request carries is bounded (issue 13): whatever integer or float stands in any
numeric field, or in a duration, the offers service answers NO with a message or asks for a quote
whose every number the scheduler can compute with; nothing raises (no OverflowError, no
ValueError), and the scheduler answers every quote that passes."""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.offers.domain import NeedsQuote, PoolChoice, Rejected, decide_request
from shared.messages import QuoteSlots
from shared.models import (
    DOCKER_CONTAINER_KIND,
    IVOA_DATA_KIND,
    JUPYTER_NOTEBOOK_KIND,
    SIMPLE_COMPUTE_KIND,
    SKAO_DATA_KIND,
)
from shared.models.limits import MAX_BYTES, MAX_CORES, MAX_DURATION, MAX_GIB
from shared.pools import Pool
from tests.handlers.units import scheduler_unit
from tests.unit.offers_policy import NOW
from tests.unit.offers_policy import POLICY as LOCAL_POLICY

#: A pool whose platform runs and stages every kind, so that every field reaches the scheduler.
POLICY = replace(
    LOCAL_POLICY,
    pools=(
        PoolChoice(
            "local",
            "local",
            60,
            executable_kinds=frozenset({JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND}),
            data_kinds=frozenset({IVOA_DATA_KIND, SKAO_DATA_KIND}),
        ),
    ),
)

STORAGE_KIND = (
    "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/storage/simple-storage-resource.yaml"
)
COST_KIND = (
    "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/cost/simple-minmax-float-cost.yaml"
)

#: A request with every numeric field of the schema that a client can send, each at a sane value.
TEMPLATE: dict[str, Any] = {
    "executable": {
        "kind": JUPYTER_NOTEBOOK_KIND,
        "location": "/nb.ipynb",
        "meta": {"options": [{"kind": "uri:integer-value-option", "path": "x", "min": 1, "max": 2}]},
    },
    "compute": {"kind": SIMPLE_COMPUTE_KIND, "cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
    "storage": [{"kind": STORAGE_KIND, "meta": {"name": "s"}, "size": {"min": 1, "max": 1}}],
    "data": [
        {
            "kind": IVOA_DATA_KIND,
            "meta": {"name": "a"},
            "ivoa": {"datalink": {"content_length": 1000}, "obscore": {"calib_level": 2}},
        },
        {
            "kind": SKAO_DATA_KIND,
            "meta": {"name": "b"},
            "skao": {"namespace": "n", "objectname": "o", "datasize": 9},
        },
    ],
    "costs": [{"kind": COST_KIND, "min": 0.5, "max": 1.5}],
    "metrics": [],
    "schedule": {"requested": {"duration": "PT1M"}},
}
DOCKER: dict[str, Any] = {
    "kind": DOCKER_CONTAINER_KIND,
    "image": {"locations": ["x"]},
    "network": {"ports": [{"internal": {"port": 80}, "external": {"port": 8080}}]},
}
PATHS: list[tuple[str | int, ...]] = [
    ("compute", "cores", "min"),
    ("compute", "cores", "max"),
    ("compute", "memory", "min"),
    ("compute", "memory", "max"),
    ("storage", 0, "size", "min"),
    ("storage", 0, "size", "max"),
    ("data", 0, "ivoa", "datalink", "content_length"),
    ("data", 0, "ivoa", "obscore", "calib_level"),
    ("data", 1, "skao", "datasize"),
    ("costs", 0, "min"),
    ("costs", 0, "max"),
    ("executable", "meta", "options", 0, "min"),
    ("executable", "meta", "options", 0, "max"),
]
DOCKER_PATHS: list[tuple[str | int, ...]] = [
    ("executable", "network", "ports", 0, "internal", "port"),
    ("executable", "network", "ports", 0, "external", "port"),
]

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, -1, 2**63, 2**64, 10**18 + 1, 10**40, MAX_CORES + 1, MAX_GIB + 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
DURATIONS = st.one_of(
    st.integers(min_value=0, max_value=10**30).map(lambda n: f"P{n}D"),
    st.integers(min_value=0, max_value=10**30).map(lambda n: f"PT{n}S"),
    st.integers(min_value=0, max_value=10**30).map(lambda n: f"P{n}W"),
    st.integers(min_value=0, max_value=10**12).map(lambda n: f"PT{n}.5S"),
)


def put(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target: Any = changed
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return changed


async def scheduler_answers(quote: QuoteSlots) -> None:
    """The scheduler's whole quote handler, on a pool as large as any request may be."""
    huge = Pool(
        name="huge", platform="local", cores=MAX_CORES, memory_gib=MAX_GIB, storage_gib=MAX_GIB, grid_s=1
    )
    async with scheduler_unit(huge) as scheduler:
        fields = quote.model_dump(exclude={"request_id", "earliest_start", "requested_at"})
        await scheduler.quote(quote.request_id, quote.earliest_start, at=quote.requested_at, **fields)


def judge(document: dict[str, Any]) -> None:
    decision = decide_request(json.dumps(document).encode(), "r1", "alice", NOW, POLICY)
    if isinstance(decision, Rejected):
        meta = decision.offerset.meta
        assert decision.offerset.result == "NO" and meta is not None
        assert meta.messages and all(m.message for m in meta.messages)
        return
    assert isinstance(decision, NeedsQuote)
    quote = decision.quote
    assert 1 <= quote.cores_min <= quote.cores_max <= MAX_CORES
    assert 1 <= quote.memory_min <= quote.memory_max <= MAX_GIB
    assert 0 < quote.duration_s <= MAX_DURATION.total_seconds()
    for item in decision.request.data or []:
        for size in (
            getattr(getattr(getattr(item, "ivoa", None), "datalink", None), "content_length", None),
        ):
            assert size is None or size <= MAX_BYTES
    asyncio.run(scheduler_answers(quote))


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_template_itself_is_quoted() -> None:
    decision = decide_request(json.dumps(TEMPLATE).encode(), "r1", "alice", NOW, POLICY)
    assert isinstance(decision, NeedsQuote), decision
    judge(TEMPLATE)  # and the scheduler quotes it


@FAST
@given(path=st.sampled_from(PATHS), value=NUMBERS)
def test_any_number_in_any_field_is_answered(path: tuple[str | int, ...], value: Any) -> None:
    judge(put(TEMPLATE, path, value))


@FAST
@given(path=st.sampled_from(DOCKER_PATHS), value=NUMBERS)
def test_any_port_is_answered(path: tuple[str | int, ...], value: Any) -> None:
    judge(put({**TEMPLATE, "executable": DOCKER}, path, value))


@FAST
@given(duration=DURATIONS)
def test_any_duration_is_answered(duration: str) -> None:
    judge(put(TEMPLATE, ("schedule", "requested", "duration"), duration))


@FAST
@given(years=st.integers(min_value=1, max_value=10**6), days=st.integers(min_value=0, max_value=10**7))
def test_any_start_window_is_answered(years: int, days: int) -> None:
    start = f"{min(years, 9999):04d}-01-01T00:00:00Z/P{days}D"
    judge(put(TEMPLATE, ("schedule", "requested", "start"), start))


def test_a_duration_just_within_the_limit_is_quoted_and_just_past_it_refused() -> None:
    within = decide_request(
        json.dumps(put(TEMPLATE, ("schedule", "requested", "duration"), "P36525D")).encode(),
        "r",
        "a",
        NOW,
        POLICY,
    )
    assert isinstance(within, NeedsQuote)
    past = decide_request(
        json.dumps(put(TEMPLATE, ("schedule", "requested", "duration"), "P36526D")).encode(),
        "r",
        "a",
        NOW,
        POLICY,
    )
    assert isinstance(past, Rejected)
    assert "longer than the limit of P36525D" in (past.offerset.meta.messages or [])[0].message  # type: ignore[union-attr,operator]
