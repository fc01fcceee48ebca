"""SRCNet data product identifiers (ivo://…?scope:name, SKAO namespace/objectname) as Rucio DIDs,
including hostile identifiers, and what the offers service, the scheduler and the jbo launcher make
of them."""

from __future__ import annotations

from typing import Any

import pytest

from services.launcher.platforms.jbo.job import input_from_data
from services.offers.domain import NeedsQuote, Rejected, decide_request
from services.scheduler.estimates import DataNeed, data_needs
from shared.models import DOCKER_CONTAINER_KIND, IVOA_DATA_KIND, RUCIO_DATA_KIND, SKAO_DATA_KIND
from shared.models.data_products import (
    MAX_IVOID_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SCOPE_LENGTH,
    DataProductDid,
    NotADataProduct,
    data_product_did,
    did_from_ivoid,
    did_from_skao,
)
from tests.unit.offers_policy import NOW
from tests.unit.test_offers_domain import pool, request_bytes, with_pools


@pytest.mark.parametrize(
    ("ivoid", "scope", "name"),
    [
        ("ivo://skao.int/data?testing:PTF10tce.fits", "testing", "PTF10tce.fits"),
        ("IVO://skao.int/data?testing:x", "testing", "x"),  # the scheme is case-blind, as in URIs
        ("ivo://uksrc.org/archive/emerlin?emerlin:TS8004_C_001.ms", "emerlin", "TS8004_C_001.ms"),
        ("ivo://skao.int/data?user.alice:run-7/cube_3.fits", "user.alice", "run-7/cube_3.fits"),
        (f"ivo://skao.int/d?{'s' * MAX_SCOPE_LENGTH}:{'n' * MAX_NAME_LENGTH}", "s" * 25, "n" * 250),
    ],
)
def test_a_data_product_identifier_names_a_rucio_did(ivoid: str, scope: str, name: str) -> None:
    assert did_from_ivoid(ivoid) == DataProductDid(scope, name, origin=ivoid)
    assert did_from_ivoid(ivoid).did == f"{scope}:{name}"


@pytest.mark.parametrize(
    ("ivoid", "problem"),
    [
        ("https://skao.int/data?testing:x", "must start with ivo://"),
        ("ivo://skao.int/data", "has no ?<scope>:<name> part"),
        ("ivo://skao.int/data?", "as <scope>:<name>"),
        ("ivo://skao.int/data?just-a-name", "as <scope>:<name>"),  # no scope
        ("ivo://skao.int/data?:name", "the scope is empty"),
        ("ivo://skao.int/data?testing:", "the name is empty"),  # empty name
        ("ivo://skao.int?testing:x", "must have a resource path"),
        ("ivo://skao.int//data?testing:x", "must have a resource path"),
        ("ivo://sk/data?testing:x", "must have an authority"),
        ("ivo://skao int/data?testing:x", "must have an authority"),
        ("ivo://skao.int/da ta?testing:x", "must have a resource path"),
        ("ivo://skao.int/data?test ing:x", "no further ?, &, =, # or spaces"),
        ("ivo://skao.int/data?testing:x&scope=root", "no further ?, &, =, # or spaces"),  # query injection
        ("ivo://skao.int/data?testing:x?y:z", "no further ?, &, =, # or spaces"),
        ("ivo://skao.int/data?testing:x#frag", "no further ?, &, =, # or spaces"),
        ("ivo://skao.int/data?testing:x\nX-Rucio-Auth-Token: t", "no further ?, &, =, # or spaces"),
        ("ivo://skao.int/data?testing:%2e%2e/etc", "must not be percent-encoded"),
        ("ivo://skao.int/data?testing:../../etc/passwd", "must start with a letter or digit"),
        ("ivo://skao.int/data?testing:a/../../b", "'..' path segment"),
        ("ivo://skao.int/data?testing:a//b", "empty, '.' or '..' path segment"),
        ("ivo://skao.int/data?tes/ting:x", "may hold only letters, digits and ._-"),
        ("ivo://skao.int/data?testing:x;rm", "must start with a letter or digit and hold only"),
        ("ivo://skao.int/data?testing:a:b", "must start with a letter or digit and hold only"),
        ("ivo://skao.int/data?testing:caf\u00e9", "must start with a letter or digit and hold only"),
        (f"ivo://skao.int/data?{'s' * 26}:x", "more than Rucio's limit of 25"),
        (f"ivo://skao.int/data?testing:{'n' * 251}", "more than Rucio's limit of 250"),
        ("ivo://skao.int/" + "p" * MAX_IVOID_LENGTH + "?t:x", f"more than the limit of {MAX_IVOID_LENGTH}"),
    ],
)
def test_an_identifier_that_names_no_did_is_refused_with_a_reason(ivoid: str, problem: str) -> None:
    with pytest.raises(NotADataProduct) as refused:
        did_from_ivoid(ivoid)
    assert problem in refused.value.reason
    assert "\n" not in refused.value.reason


def test_skao_namespace_and_objectname_are_scope_and_name() -> None:
    assert did_from_skao("testing", "near-object").did == "testing:near-object"
    with pytest.raises(NotADataProduct, match="namespace that is no Rucio scope"):
        did_from_skao("bad scope", "x")
    with pytest.raises(NotADataProduct, match="objectname that is no Rucio name"):
        did_from_skao("testing", "../x")


def ivoa(ivoid: str | None, **extra: Any) -> dict[str, Any]:
    block: dict[str, Any] = {"ivoid": ivoid} if ivoid is not None else {}
    return {"kind": IVOA_DATA_KIND, "meta": {"name": "product"}, "ivoa": block | extra}


def test_which_data_resources_name_a_did() -> None:
    assert data_product_did(ivoa("ivo://skao.int/data?testing:x")) == DataProductDid(
        "testing", "x", "ivo://skao.int/data?testing:x"
    )
    assert data_product_did(ivoa(None, datalink={"access_url": "https://a.example/x"})) is None
    skao = {"kind": SKAO_DATA_KIND, "skao": {"namespace": "ns", "objectname": "o"},
            "ivoa": {"ivoid": "ivo://skao.int/data?other:p"}}  # fmt: skip
    assert data_product_did(skao) == DataProductDid("ns", "o")  # namespace/objectname first
    assert data_product_did({**skao, "skao": {}}) == DataProductDid("other", "p", "ivo://skao.int/data?other:p")
    rucio = {"kind": RUCIO_DATA_KIND, "rucio": {"scope": "s", "object": "o"}}
    assert data_product_did(rucio) is None  # a Rucio resource names its DID plainly
    with pytest.raises(NotADataProduct, match=r"the identifier 'ivo://skao.int/data\\n' names no"):
        data_product_did(ivoa("ivo://skao.int/data\n"))  # a control character is shown escaped


def test_the_scheduler_looks_an_ivo_data_product_up_like_rucio_data() -> None:
    [product, plain] = data_needs(
        [ivoa("ivo://skao.int/data?testing:far-object"), ivoa(None, datalink={"content_length": 5})]
    )
    assert (product.scope, product.object_name) == ("testing", "far-object")
    assert product.did == "testing:far-object"
    assert product.origin == "ivo://skao.int/data?testing:far-object" and not product.remote_http
    assert plain == DataNeed("product#2", 5, (), IVOA_DATA_KIND) and plain.remote_http


def test_the_offers_service_refuses_an_identifier_that_names_no_product() -> None:
    docker = {"kind": DOCKER_CONTAINER_KIND, "image": {"locations": ["registry.example/p:1"]}}
    policy = with_pools(pool("jbo", {DOCKER_CONTAINER_KIND}, {IVOA_DATA_KIND}))
    good_request = request_bytes(executable=docker, data=[ivoa("ivo://skao.int/data?testing:x")])
    good = decide_request(good_request, "r", "alice", NOW, policy)
    assert isinstance(good, NeedsQuote)
    bad = decide_request(
        request_bytes(executable=docker, data=[ivoa("ivo://skao.int/data?x&y=1")]), "r", "alice", NOW, policy
    )
    assert isinstance(bad, Rejected) and bad.offerset.result == "NO"
    texts = [m.message or "" for m in bad.offerset.meta.messages or []]  # type: ignore[union-attr]
    assert any(
        "The data resource 'product' names no SRCNet data product: the identifier "
        "'ivo://skao.int/data?x&y=1' must have exactly one <scope>:<name>" in text
        for text in texts
    ), texts


def test_the_jbo_launcher_stages_an_ivo_data_product_as_its_rucio_did() -> None:
    staged = input_from_data([ivoa("ivo://skao.int/data?emerlin:TS8004_C_001_20190801.ms")], None)
    rucio = input_from_data(
        [{"kind": RUCIO_DATA_KIND, "meta": {"name": "product"},
          "rucio": {"scope": "emerlin", "object": "TS8004_C_001_20190801.ms"}}],
        None,
    )  # fmt: skip
    assert staged == rucio
    assert staged.uri == "emerlin:TS8004_C_001_20190801.ms"
