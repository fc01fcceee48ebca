"""Through the HTTP API, as a client written from the schema would: what cannot run gets NO with its
own message (issue 17 item 5), and offers carry a cost and a metric on the session and on compute
(item 4), from the built-in pool and from the example pools file."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.models import (
    DOCKER_CONTAINER_KIND,
    IVOA_DATA_KIND,
    S3_DATA_KIND,
    SIMPLE_DATA_KIND,
    SIMPLE_STORAGE_KIND,
)
from shared.pools import COMPUTE_PERFORMANCE, MONETARY_COST
from tests.e2e.helpers import hello_request
from tests.e2e.http_support import JSON, HttpBroker, start_http_broker, update
from tests.schema_validation import requires_schemas, validate_against

EXAMPLE_POOLS = Path(__file__).resolve().parents[2] / "shared" / "examples" / "pools.toml"


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    """The built-in pool, as `broker up` runs it."""
    running = start_http_broker(tmp_path_factory.mktemp("http-refusals"))
    try:
        yield running
    finally:
        running.broker.stop()


@pytest.fixture(scope="module")
def example_pools(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    """The example pools file, its local pool opened to alice (the local platform runs her code)."""
    folder = tmp_path_factory.mktemp("http-example-pools")
    text = EXAMPLE_POOLS.read_text(encoding="utf-8").replace(
        '# allowed_owners = ["local:alice"]', 'allowed_owners = ["local:alice"]'
    )
    assert 'allowed_owners = ["local:alice"]' in text
    pools = folder / "pools.toml"
    pools.write_text(text, encoding="utf-8")
    running = start_http_broker(folder / "broker", EB_POOLS=str(pools))
    try:
        yield running
    finally:
        running.broker.stop()


def docker(**extra: Any) -> dict[str, Any]:
    return {"kind": DOCKER_CONTAINER_KIND, "image": {"locations": ["ghcr.io/x/y:1"]}, **extra}


def with_executable(executable: dict[str, Any]) -> dict[str, Any]:
    return {**hello_request(), "executable": executable}


def with_data(item: dict[str, Any]) -> dict[str, Any]:
    return {**hello_request(), "data": [{"meta": {"name": "input"}, **item}]}


def refused(http: HttpBroker, request: dict[str, Any]) -> list[dict[str, Any]]:
    with http.client() as alice:
        answer = alice.post("/requests", json=request, headers=JSON)
    assert answer.status_code in (200, 303), answer.text
    offerset = answer.json()
    assert offerset["result"] == "NO", offerset
    assert not offerset.get("offers")
    messages: list[dict[str, Any]] = offerset["meta"]["messages"]
    return messages


# What each refusal must say: its kind and words of its message.
REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "privileged",
        with_executable(docker(privileged=True)),
        "urn:not-supported",
        "Pool local does not run privileged containers",
    ),
    (
        "port -1",
        with_executable(docker(network={"ports": [{"internal": {"port": -1}}]})),
        "urn:invalid-value",
        "at executable.network.ports[0].internal.port: must be a port number from 1 to 65535",
    ),
    (
        "port 65536",
        with_executable(docker(network={"ports": [{"internal": {"port": 65536}}]})),
        "urn:invalid-value",
        "at executable.network.ports[0].internal.port: must be a port number from 1 to 65535",
    ),
    (
        "port as a string",
        with_executable(docker(network={"ports": [{"internal": {"port": "80"}}]})),
        "urn:invalid-value",
        'Invalid value ["80"] at executable.network.ports[0].internal.port',
    ),
    (
        "protocol",
        with_executable(docker(network={"ports": [{"internal": {"port": 80}, "protocol": "SCTP"}]})),
        "urn:invalid-value",
        "at executable.network.ports[0].protocol: the protocol must be one of UDP, TCP, HTTP, HTTPS",
    ),
    (
        "simple data without location",
        with_data({"kind": SIMPLE_DATA_KIND}),
        "urn:missing-required-value",
        "The data resource 'input' (data[0]) cannot be located, location missing",
    ),
    (
        "S3 data without endpoint and template",
        with_data({"kind": S3_DATA_KIND, "bucket": "b"}),
        "urn:missing-required-value",
        "The data resource 'input' (data[0]) cannot be located, endpoint, template missing",
    ),
    (
        "IVOA data without ivoa block",
        with_data({"kind": IVOA_DATA_KIND}),
        "urn:missing-required-value",
        "The data resource 'input' (data[0]) cannot be located, ivoa block",
    ),
]


@pytest.mark.parametrize(
    ("request_doc", "kind", "words"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_each_refusal_gets_no_with_its_message(
    http: HttpBroker, request_doc: dict[str, Any], kind: str, words: str
) -> None:
    messages = refused(http, copy.deepcopy(request_doc))
    found = [m for m in messages if m["kind"] == kind and words in m["message"]]
    assert found, messages
    assert found[0]["level"] == "ERROR" and found[0]["template"] and found[0]["values"]


def storage(gib: int) -> dict[str, Any]:
    return {
        **hello_request(),
        "storage": [{"kind": SIMPLE_STORAGE_KIND, "meta": {"name": "scratch"}, "size": {"min": gib}}],
    }


def test_storage_past_the_pools_limit_gets_no_naming_the_limit_and_the_amount(
    example_pools: HttpBroker,
) -> None:
    messages = refused(example_pools, storage(100))
    assert [m["kind"] for m in messages] == ["urn:resource-limit"], messages
    assert messages[0]["values"] == {"pool": "local", "limit": "50", "asked": "100"}
    assert "at most 50 GiB of storage per request" in messages[0]["message"]


def offers_of(http: HttpBroker, request: dict[str, Any]) -> list[dict[str, Any]]:
    with http.client() as alice:
        answer = alice.post("/requests", json=request, headers=JSON)
        assert answer.status_code == 303, answer.text
        offerset = answer.json()
        assert offerset["result"] == "YES", offerset["meta"].get("messages")
        validate_against("OfferSetResponse", offerset)
        offers: list[dict[str, Any]] = offerset["offers"]
        for offer in offers:  # free the held capacity for the next test
            assert update(alice, offer["meta"]["uuid"], "REJECTED").status_code == 200
    return offers


def one_of_type(items: list[dict[str, Any]] | None, type_: str) -> dict[str, Any]:
    found = [item for item in items or [] if item.get("type") == type_]
    assert len(found) == 1, items
    assert isinstance(found[0]["min"], float) and isinstance(found[0]["max"], float)
    assert found[0]["min"] <= found[0]["max"]
    return found[0]


@requires_schemas
def test_offers_of_the_built_in_pool_carry_a_cost_and_a_metric_on_session_and_compute(
    http: HttpBroker,
) -> None:
    for offer in offers_of(http, hello_request()):
        validate_against("ScheduledExecutionSession", offer)
        for component in (offer, offer["compute"]):
            one_of_type(component.get("costs"), MONETARY_COST)
            one_of_type(component.get("metrics"), COMPUTE_PERFORMANCE)


@requires_schemas
def test_offers_of_the_example_pools_file_price_session_compute_and_storage(
    example_pools: HttpBroker,
) -> None:
    for offer in offers_of(example_pools, storage(10)):
        validate_against("ScheduledExecutionSession", offer)
        session_cost = one_of_type(offer.get("costs"), MONETARY_COST)
        assert session_cost == one_of_type(offer["compute"].get("costs"), MONETARY_COST)
        assert session_cost["max"] > 0
        one_of_type(offer["compute"].get("metrics"), COMPUTE_PERFORMANCE)
        (scratch,) = offer["storage"]
        assert one_of_type(scratch.get("costs"), MONETARY_COST) != session_cost
