"""The malformed-input corpus (issue 3) and generated junk, through the real broker.

Every corpus case is published as raw bytes and must get exactly one offer set, NO, with its specific
message; no service may die or restart meanwhile, and a valid request is still answered YES after.
Hypothesis then throws request-like documents and raw bytes at the bus: each must be answered
(YES or NO, never the dead-letter `urn:internal-error`) and every service must stay up.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nats
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shared import subjects
from shared.auth import owners
from shared.client import BrokerClient, RequestTooLarge, read_request_file, wait_for_services
from shared.models import (
    DOCKER_CONTAINER_KIND,
    JUPYTER_NOTEBOOK_KIND,
    KIND_BASE,
    SIMPLE_COMPUTE_KIND,
    SIMPLE_DATA_KIND,
    SIMPLE_STORAGE_KIND,
    SIMPLE_VOLUME_KIND,
    OfferSetResponse,
)
from shared.ops.embedded import SERVICES, EmbeddedBroker
from tests.conftest import broker_env
from tests.e2e.helpers import HELLO_REQUEST
from tests.unit.test_malformed_corpus import CASES, TOO_LARGE_CASE, Case, assert_specific_no, messages_of

ALICE = owners.local("alice").token
BUS_CASES = [case for case in CASES if case is not TOO_LARGE_CASE]
ANSWER_TIMEOUT_S = 30.0
CONCURRENCY = 8


def pids(broker: EmbeddedBroker) -> dict[str, int]:
    return {name: service.proc.pid for name, service in broker.services.items() if service.proc is not None}


def assert_alive_and_unrestarted(broker: EmbeddedBroker, at_start: dict[str, int]) -> None:
    assert broker.dead_services() == []
    assert pids(broker) == at_start, "a service was restarted"


async def offerset_counts(broker: EmbeddedBroker) -> dict[str, int]:
    """How many messages EB_EVENTS stores on each of alice's offer-set subjects (as the operator)."""
    nc = await nats.connect(broker.url, **broker.operator().connect_options())
    try:
        info = await nc.jetstream().stream_info(
            subjects.EVENTS_STREAM, subjects_filter=subjects.OFFERSET.filter(owner=ALICE)
        )
    finally:
        await nc.close()
    return dict(info.state.subjects or {})


async def test_every_corpus_case_gets_one_specific_no_and_nothing_restarts(broker: EmbeddedBroker) -> None:
    at_start = pids(broker)
    assert set(at_start) == set(SERVICES)
    request_ids = {case.name: str(uuid.uuid4()) for case in BUS_CASES}
    limit = asyncio.Semaphore(CONCURRENCY)

    async with BrokerClient(broker.url, broker.login("alice")) as client:

        async def submit(case: Case) -> tuple[Case, OfferSetResponse]:
            async with limit:
                answer = await client.submit(
                    case.payload(), request_id=request_ids[case.name], timeout=ANSWER_TIMEOUT_S
                )
                assert broker.dead_services() == [], f"a service died after {case.name}"
                return case, answer

        answers = await asyncio.gather(*(submit(case) for case in BUS_CASES))
        for case, offerset in answers:
            assert_specific_no(offerset, case)
        assert_alive_and_unrestarted(broker, at_start)

        # Exactly one offer set per request: no retry produced a second (e.g. a dead-letter NO).
        counts = await offerset_counts(broker)
        for case in BUS_CASES:
            subject = subjects.offerset(ALICE, request_ids[case.name])
            assert counts.get(subject) == 1, f"{case.name}: {counts.get(subject)} offer sets on {subject}"

        # Over 1 MiB never reaches the broker: the NATS server's max_payload (1 MiB) refuses it at the
        # client. The broker's own answer to it (urn:input-too-large) is checked in the unit test.
        with pytest.raises(nats.errors.MaxPayloadError):
            await client.nc.publish(subjects.request(ALICE, str(uuid.uuid4())), TOO_LARGE_CASE.payload())
        # The client says so itself, with the limit, instead of retrying until it times out.
        with pytest.raises(RequestTooLarge, match="at most 1,048,576 bytes"):
            await client.submit(TOO_LARGE_CASE.payload())

        good = await client.submit(read_request_file(HELLO_REQUEST), timeout=ANSWER_TIMEOUT_S)
        assert good.result == "YES", messages_of(good)
        assert good.offers
    assert_alive_and_unrestarted(broker, at_start)


# -- hypothesis: request-like documents and raw bytes never crash a service --------------------------

VOCABULARY = [
    "executable", "compute", "kind", "cores", "min", "max", "memory", "data", "storage", "schedule",
    "requested", "duration", "start", "location", "volumes", "resource", "meta", "name", "image",
    "locations", "size", "path", "mode", "type",
]  # fmt: skip
KINDS = [
    JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND, SIMPLE_COMPUTE_KIND, SIMPLE_DATA_KIND, SIMPLE_STORAGE_KIND,
    SIMPLE_VOLUME_KIND, KIND_BASE + "executable/nothing.yaml", "urn:nothing",
]  # fmt: skip
WORDS = [
    "PT10M", "PT0S", "P1M", "-PT1H", "P99999D", "PT1X", "2030-01-01T00:00:00Z/PT1H", "tomorrow/later",
    "2020-01-01T00:00:00Z/2020-01-01T01:00:00Z", "9999-12-31T23:00:00Z", "/srv/hello.ipynb", "input-data",
    "READONLY", "",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=10),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(KINDS),
    st.sampled_from(WORDS),
)
keys = st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6))
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=16,
)
executables = st.fixed_dictionaries(
    {"kind": st.sampled_from(KINDS)},
    optional={"location": st.one_of(st.sampled_from(WORDS), values), "meta": values, "image": values},
)
computes = st.fixed_dictionaries(
    {"kind": st.sampled_from(KINDS)},
    optional={
        "cores": st.fixed_dictionaries({}, optional={"min": scalars, "max": scalars}),
        "memory": st.fixed_dictionaries({}, optional={"min": scalars, "max": scalars}),
        "volumes": st.lists(values, max_size=2),
    },
)
schedules = st.fixed_dictionaries(
    {"requested": st.fixed_dictionaries({}, optional={"duration": st.sampled_from(WORDS) | values,
                                                      "start": st.sampled_from(WORDS) | values})}
)  # fmt: skip
# Near-valid requests: the example with a few fields replaced, so that some reach the scheduler.
MUTABLE_PATHS = [
    "executable.kind", "executable.location", "compute.kind", "compute.cores.min", "compute.cores.max",
    "compute.memory.min", "compute.memory.max", "compute.volumes", "schedule.requested.duration",
    "schedule.requested.start", "schedule.requested", "data", "storage", "meta",
]  # fmt: skip


def mutate(changes: dict[str, Any]) -> dict[str, Any]:
    document = read_request_file(HELLO_REQUEST)
    for path, value in changes.items():
        target = document
        *parents, leaf = path.split(".")
        for parent in parents:
            child = target.get(parent)
            if not isinstance(child, dict):
                child = target[parent] = {}
            target = child
        target[leaf] = value
    return document


near_valid = st.dictionaries(
    st.sampled_from(MUTABLE_PATHS),
    st.one_of(st.integers(min_value=-1, max_value=9), st.sampled_from(WORDS + KINDS), st.none()),
    max_size=2,
).map(mutate)
documents = st.one_of(
    near_valid,
    near_valid,
    st.dictionaries(keys, values, max_size=6),
    st.fixed_dictionaries(
        {},
        optional={
            "executable": executables | values,
            "compute": computes | values,
            "data": st.lists(values, max_size=2) | values,
            "storage": st.lists(values, max_size=2),
            "schedule": schedules | values,
            "meta": values,
        },
    ),
)


def encode(document: dict[str, Any], as_yaml: bool) -> bytes:
    if as_yaml:
        return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


VALID = HELLO_REQUEST.read_bytes()
raw_bytes = st.one_of(
    st.binary(max_size=512),
    # A valid request cut short, or with a few bytes overwritten.
    st.integers(min_value=0, max_value=len(VALID)).map(lambda n: VALID[:n]),
    st.tuples(st.integers(min_value=0, max_value=len(VALID)), st.binary(min_size=1, max_size=8)).map(
        lambda cut: VALID[: cut[0]] + cut[1] + VALID[cut[0] + len(cut[1]) :]
    ),
)


@dataclass(frozen=True)
class Fuzzed:
    broker: EmbeddedBroker
    pids: dict[str, int]


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """One broker for every generated example (a fresh one per example would take minutes)."""
    broker = EmbeddedBroker(data_dir=tmp_path_factory.mktemp("fuzz-broker"), env=broker_env())
    broker.start()
    try:
        asyncio.run(wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator()))
        yield Fuzzed(broker, pids(broker))
    finally:
        broker.stop()


def submit_and_check(fuzzed: Fuzzed, payload: bytes) -> None:
    """Publish one payload with a fresh connection; it must be answered, never dead-lettered."""

    async def run() -> OfferSetResponse:
        async with BrokerClient(fuzzed.broker.url, fuzzed.broker.login("fuzzer")) as client:
            return await client.submit(payload, timeout=ANSWER_TIMEOUT_S)

    offerset = asyncio.run(run())
    assert offerset.result in ("YES", "NO")
    found = messages_of(offerset)
    event(f"answer: {offerset.result} {sorted({kind for kind, _ in found})}")
    if offerset.result == "NO":
        assert found and all(text.strip() for _, text in found), found
    assert "urn:internal-error" not in [kind for kind, _ in found], (payload[:300], found)
    assert_alive_and_unrestarted(fuzzed.broker, fuzzed.pids)


FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(document=documents, as_yaml=st.booleans())
def test_generated_documents_are_always_answered(
    shared_broker: Fuzzed, document: dict[str, Any], as_yaml: bool
) -> None:
    submit_and_check(shared_broker, encode(document, as_yaml))


@FUZZ
@given(payload=raw_bytes)
def test_generated_bytes_are_always_answered(shared_broker: Fuzzed, payload: bytes) -> None:
    submit_and_check(shared_broker, payload)


def test_the_fuzzed_broker_still_says_yes(shared_broker: Fuzzed) -> None:
    async def run() -> OfferSetResponse:
        async with BrokerClient(shared_broker.broker.url, shared_broker.broker.login("after-fuzz")) as client:
            return await client.submit(read_request_file(HELLO_REQUEST), timeout=ANSWER_TIMEOUT_S)

    # The fuzzers' YES offers hold the 4-core pool until they expire; the request is answered either
    # way, and a NO may only be about capacity.
    offerset = asyncio.run(run())
    if offerset.result == "NO":
        assert {kind for kind, _ in messages_of(offerset)} == {"urn:resource-limit"}, messages_of(offerset)
    assert_alive_and_unrestarted(shared_broker.broker, shared_broker.pids)
