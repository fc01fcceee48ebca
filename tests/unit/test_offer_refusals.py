"""NO at offer time for what cannot run: privileged containers, ports, protocols, data that says
nowhere where it is, and a pool's per-request storage limit; each with its own message.

Parse-time rules (`shared.models.runnable`, the port range of `shared.models.limits`) hold for any
pool; pool-time rules (`services.offers.domain._pools_within_rules`) depend on the pool.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.offers.domain import NeedsQuote, OfferPolicy, PoolChoice, Rejected, decide_request
from services.offers.platforms import pool_choices
from shared.models import (
    DOCKER_CONTAINER_KIND,
    IVOA_DATA_KIND,
    JUPYTER_NOTEBOOK_KIND,
    S3_DATA_KIND,
    SIMPLE_DATA_KIND,
    SIMPLE_STORAGE_KIND,
    MessageItem,
    to_jsonable,
)
from shared.models.runnable import PORT_PROTOCOLS, S3_LOCATORS
from shared.pools import Pool, PoolsConfigError, load_pools
from shared.settings import Settings
from tests.schema_validation import openapi_dir, requires_schemas, validate_against
from tests.unit.offers_policy import NOW, POLICY

OWNER = "alice"
NOTEBOOK = {"kind": JUPYTER_NOTEBOOK_KIND, "location": "https://example.org/hello.ipynb"}


def docker(**extra: Any) -> dict[str, Any]:
    return {"kind": DOCKER_CONTAINER_KIND, "image": {"locations": ["ghcr.io/x/y:1"]}, **extra}


def port(**fields: Any) -> dict[str, Any]:
    return docker(network={"ports": [fields]})


def decide(document: dict[str, Any], policy: OfferPolicy = POLICY) -> Rejected | NeedsQuote:
    return decide_request(json.dumps(document).encode(), "r1", OWNER, NOW, policy)


def refusals(document: dict[str, Any], policy: OfferPolicy = POLICY) -> list[MessageItem]:
    decision = decide(document, policy)
    assert isinstance(decision, Rejected), f"expected NO, got {decision!r}"
    assert decision.offerset.result == "NO" and decision.offerset.meta is not None
    messages = list(decision.offerset.meta.messages or [])
    for message in messages:
        assert message.level == "ERROR" and message.time == NOW
        assert message.message and "${" not in message.message
    return messages


def only(document: dict[str, Any], policy: OfferPolicy = POLICY) -> MessageItem:
    messages = refusals(document, policy)
    assert len(messages) == 1, messages
    return messages[0]


def quoted(document: dict[str, Any], policy: OfferPolicy = POLICY) -> NeedsQuote:
    decision = decide(document, policy)
    assert isinstance(decision, NeedsQuote), decision
    return decision


def with_pools(*pools: PoolChoice) -> OfferPolicy:
    return replace(POLICY, pools=pools)


LOCAL = POLICY.pools[0]


# -- privileged containers (pool time) -------------------------------------------------------------


def test_a_privileged_container_gets_no_naming_the_pool_and_the_setting() -> None:
    message = only({"executable": docker(privileged=True)})
    assert message.kind == "urn:not-supported"
    assert message.values == {"pool": "local"}
    assert "does not run privileged containers" in (message.message or "")
    assert "allow_privileged" in (message.message or "")


@pytest.mark.parametrize("privileged", [False, None])
def test_an_unprivileged_container_is_quoted(privileged: bool | None) -> None:
    quoted({"executable": docker(privileged=privileged)})


def test_a_pool_that_allows_privileged_containers_is_the_one_asked() -> None:
    allowing = replace(LOCAL, name="trusted", allows_privileged=True)
    decision = quoted({"executable": docker(privileged=True)}, with_pools(LOCAL, allowing))
    assert decision.pools == ("trusted",)


@pytest.mark.parametrize("hostile", ["yes", "true", 1, 0, [], {}])
def test_a_privileged_flag_that_is_not_a_boolean_is_an_invalid_value(hostile: object) -> None:
    message = only({"executable": docker(privileged=hostile)})
    assert message.kind == "urn:invalid-value"
    assert message.values is not None and message.values["path"] == "executable.privileged"


# -- ports and protocols (parse time) --------------------------------------------------------------


@pytest.mark.parametrize("number", [-1, 0, 65536, 70000, -(2**63), 2**64, 10**400])
def test_an_internal_port_outside_1_to_65535_is_refused(number: int) -> None:
    message = only({"executable": port(internal={"port": number})})
    assert message.kind == "urn:invalid-value"
    assert message.values is not None
    assert message.values["path"] == "executable.network.ports[0].internal.port"
    assert message.values["reason"] == "must be a port number from 1 to 65535"


@pytest.mark.parametrize("hostile", ["80", 80.0, 80.5, True, None, [80], {"n": 80}])
def test_an_internal_port_that_is_not_an_integer_is_refused(hostile: object) -> None:
    document = {"executable": port(internal={"port": hostile})}
    if hostile is None:  # an absent port: nothing to publish, nothing wrong
        quoted(document)
        return
    message = only(document)
    assert message.kind == "urn:invalid-value"
    assert message.values is not None
    assert message.values["path"] == "executable.network.ports[0].internal.port"


@pytest.mark.parametrize("number", [1, 80, 8888, 65535])
def test_an_internal_port_in_range_is_quoted(number: int) -> None:
    quoted({"executable": port(internal={"port": number}, protocol="TCP")})


@pytest.mark.parametrize("protocol", PORT_PROTOCOLS)
def test_each_protocol_the_schema_lists_is_quoted(protocol: str) -> None:
    quoted({"executable": port(internal={"port": 8080}, protocol=protocol)})


@pytest.mark.parametrize("protocol", ["SCTP", "tcp", "", " TCP", "HTTP/2", "TCP\u202e", "X" * 10_000])
def test_a_protocol_the_schema_does_not_list_is_refused(protocol: str) -> None:
    message = only({"executable": port(internal={"port": 8080}, protocol=protocol)})
    assert message.kind == "urn:invalid-value"
    assert message.values is not None
    assert message.values["path"] == "executable.network.ports[0].protocol"
    assert message.values["protocols"] == "UDP, TCP, HTTP, HTTPS"
    # The client's value is shown cut and with control characters escaped.
    assert len(message.values["value"]) <= 90
    assert "\u202e" not in (message.message or "")


@pytest.mark.parametrize("hostile", [5, True, ["TCP"], {"p": "TCP"}])
def test_a_protocol_that_is_not_a_string_is_refused(hostile: object) -> None:
    message = only({"executable": port(internal={"port": 8080}, protocol=hostile)})
    assert message.kind == "urn:invalid-value"
    assert message.values is not None and message.values["path"] == "executable.network.ports[0].protocol"


def test_every_bad_protocol_of_a_request_is_named() -> None:
    ports = [{"internal": {"port": 80}, "protocol": "QUIC"}, {"internal": {"port": 22}}, {"protocol": "SCTP"}]
    messages = refusals({"executable": docker(network={"ports": ports})})
    paths = sorted(m.values["path"] for m in messages if m.values)
    assert paths == ["executable.network.ports[0].protocol", "executable.network.ports[2].protocol"]


def test_a_port_out_of_range_is_named_even_beside_a_bad_protocol() -> None:
    # The range is the model's, so it is reported first; the protocol is judged once the document
    # parses (the client fixes one, then is told of the other).
    ports = [{"internal": {"port": 0}}, {"internal": {"port": 80}, "protocol": "QUIC"}]
    message = only({"executable": docker(network={"ports": ports})})
    assert (
        message.values is not None and message.values["path"] == "executable.network.ports[0].internal.port"
    )


@requires_schemas
def test_the_protocols_are_those_the_published_schema_lists() -> None:
    document = yaml.safe_load((openapi_dir() / "kinds" / "executable" / "docker-container.yaml").read_text())
    description = document["components"]["schemas"]["DockerNetworkPort"]["properties"]["protocol"][
        "description"
    ]
    listed = re.search(r"\[([A-Z, ]+)\]", description)
    assert listed is not None, description
    assert tuple(p.strip() for p in listed.group(1).split(",")) == PORT_PROTOCOLS


# -- data items that say nowhere where they are (parse time) ---------------------------------------


def data(item: dict[str, Any]) -> dict[str, Any]:
    return {"executable": NOTEBOOK, "data": [{"meta": {"name": "input"}, **item}]}


@pytest.mark.parametrize("location", [None, "", "   "])
def test_a_simple_item_without_a_location_is_refused(location: str | None) -> None:
    item: dict[str, Any] = {"kind": SIMPLE_DATA_KIND}
    if location is not None:
        item["location"] = location
    message = only(data(item))
    assert message.kind == "urn:missing-required-value"
    assert message.values is not None
    assert (message.values["name"], message.values["where"], message.values["fields"]) == (
        "input",
        "data[0]",
        "location",
    )


def test_a_simple_item_with_a_location_is_quoted() -> None:
    quoted(data({"kind": SIMPLE_DATA_KIND, "location": "https://example.org/input.fits"}))


S3_FULL = {
    "endpoint": "https://s3.example.org",
    "template": "https://{bucket}.s3.example.org/{object}",
    "bucket": "b",
}


@pytest.mark.parametrize("missing", [(f,) for f in S3_LOCATORS] + [S3_LOCATORS, ("endpoint", "bucket")])
def test_an_s3_item_missing_a_locating_field_names_each_missing_one(missing: tuple[str, ...]) -> None:
    item = {"kind": S3_DATA_KIND, **{k: v for k, v in S3_FULL.items() if k not in missing}}
    message = only(data(item))
    assert message.kind == "urn:missing-required-value"
    assert message.values is not None and message.values["fields"] == ", ".join(missing)
    assert "S3" in (message.message or "")


def test_an_s3_item_with_a_blank_bucket_is_refused() -> None:
    message = only(data({"kind": S3_DATA_KIND, **S3_FULL, "bucket": ""}))
    assert message.values is not None and message.values["fields"] == "bucket"


@pytest.mark.parametrize("block", [None, {}, {"ivoid": ""}])
def test_an_ivoa_item_without_an_ivoa_block_or_ivoid_is_refused(block: dict[str, Any] | None) -> None:
    item: dict[str, Any] = {"kind": IVOA_DATA_KIND}
    if block is not None:
        item["ivoa"] = block
    message = only(data(item))
    assert message.kind == "urn:missing-required-value"
    assert "ivoa" in (message.values or {}).get("fields", "")


@pytest.mark.parametrize(
    "block",
    [
        {"ivoid": "ivo://skao.int/data?testing:PTF10tce.fits"},  # an SRCNet data product
        {"obscore": {"access_url": "https://example.org/obs.fits"}},
        {"datalink": {"access_url": "https://example.org/link.fits"}},
    ],
)
def test_an_ivoa_item_with_an_ivoid_or_access_rows_is_not_refused_for_its_locator(
    block: dict[str, Any],
) -> None:
    decision = decide(data({"kind": IVOA_DATA_KIND, "ivoa": block}))
    # The local pool stages no IVOA data, so this is refused, but for that, not for a missing locator.
    assert isinstance(decision, Rejected) and decision.offerset.meta is not None
    kinds = [m.kind for m in decision.offerset.meta.messages or []]
    assert kinds == ["urn:not-supported"], kinds


def test_an_ivoid_that_names_no_data_product_is_still_refused_as_such() -> None:
    messages = refusals(data({"kind": IVOA_DATA_KIND, "ivoa": {"ivoid": "ivo://x"}}))
    assert any("names no SRCNet data product" in (m.message or "") for m in messages)


def test_the_item_name_in_a_message_is_escaped_and_cut() -> None:
    document = data({"kind": SIMPLE_DATA_KIND})
    document["data"][0]["meta"]["name"] = "n" * 500
    message = only(document)
    assert message.values is not None and len(message.values["name"]) <= 90


# -- the per-request storage limit (pool time) -----------------------------------------------------


def storage(*minimums: int) -> dict[str, Any]:
    items = [
        {"kind": SIMPLE_STORAGE_KIND, "meta": {"name": f"s{i}"}, "size": {"min": m}}
        for i, m in enumerate(minimums)
    ]
    return {"executable": NOTEBOOK, "storage": items}


LIMITED = replace(LOCAL, max_storage_gib=100)


@pytest.mark.parametrize("minimums", [(101,), (60, 41), (10**9,), (10**9,) * 200])
def test_storage_past_the_pools_limit_gets_no_naming_the_limit_and_the_amount(
    minimums: tuple[int, ...],
) -> None:
    message = only(storage(*minimums), with_pools(LIMITED))
    assert message.kind == "urn:resource-limit"
    assert message.values == {"pool": "local", "limit": "100", "asked": str(sum(minimums))}
    assert "limits.storage_gib" in (message.message or "")


@pytest.mark.parametrize("minimums", [(100,), (50, 50), (0,), ()])
def test_storage_within_the_limit_is_quoted(minimums: tuple[int, ...]) -> None:
    assert quoted(storage(*minimums), with_pools(LIMITED)).quote.storage_min == sum(minimums)


def test_a_pool_without_a_storage_limit_is_not_limited_here() -> None:
    quoted(storage(10**9), with_pools(LOCAL))


def test_only_the_pools_whose_limit_the_storage_fits_are_asked() -> None:
    roomy = replace(LOCAL, name="roomy", max_storage_gib=1000)
    assert quoted(storage(500), with_pools(LIMITED, roomy)).pools == ("roomy",)


def test_every_pool_that_says_no_is_named_with_its_own_reason() -> None:
    tight = replace(LOCAL, name="tight", max_storage_gib=1, allows_privileged=True)
    messages = refusals({**storage(150), "executable": docker(privileged=True)}, with_pools(LIMITED, tight))
    assert sorted((m.kind, (m.values or {}).get("pool")) for m in messages) == [
        ("urn:not-supported", "local"),
        ("urn:resource-limit", "local"),
        ("urn:resource-limit", "tight"),
    ]


@pytest.mark.parametrize("hostile", [-1, "50", 5.5, True, 10**400])
def test_a_storage_size_that_is_not_a_size_is_refused_when_parsed(hostile: object) -> None:
    document = storage(1)
    document["storage"][0]["size"]["min"] = hostile
    message = only(document, with_pools(LIMITED))
    assert message.kind == "urn:invalid-value"
    assert message.values is not None and message.values["path"] == "storage[0].size.min"


# -- the pool settings ------------------------------------------------------------------------------


def test_pools_refuse_privileged_containers_unless_told_otherwise(tmp_path: Path) -> None:
    assert Pool(name="p", platform="local", cores=1, memory_gib=1).allow_privileged is False
    path = tmp_path / "pools.toml"
    path.write_text(
        '[[pools]]\nname = "p"\nplatform = "local"\ncores = 1\nmemory_gib = 1\nallow_privileged = true\n'
        "[pools.limits]\nstorage_gib = 7\n"
    )
    (choice,) = pool_choices(load_pools(Settings(), path).pools)
    assert choice.allows_privileged is True
    assert choice.max_storage_gib == 7


@pytest.mark.parametrize("value", ['"yes"', "1"])
def test_an_allow_privileged_that_is_not_a_boolean_is_refused_at_start(tmp_path: Path, value: str) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(
        f'[[pools]]\nname = "p"\nplatform = "local"\ncores = 1\nmemory_gib = 1\nallow_privileged = {value}\n'
    )
    with pytest.raises(PoolsConfigError, match="allow_privileged"):
        load_pools(Settings(), path)


@requires_schemas
def test_each_refusal_conforms_to_the_schema() -> None:
    for document, policy in [
        ({"executable": docker(privileged=True)}, POLICY),
        ({"executable": port(internal={"port": 0}, protocol="SCTP")}, POLICY),
        (data({"kind": S3_DATA_KIND}), POLICY),
        (storage(101), with_pools(LIMITED)),
    ]:
        decision = decide(document, policy)
        assert isinstance(decision, Rejected)
        validate_against("OfferSetResponse", to_jsonable(decision.offerset))
