"""OidcVerifier with its own HTTP fetch against the fake provider served on 127.0.0.1: discovery
and keys over the wire, rotation, and each fault a provider (or the proxy in front of it) shows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.auth import owners
from shared.auth.oidc import MAX_DOCUMENT_BYTES, OidcError, OidcVerifier
from tests.fakes.oidc import DEFAULT_AUDIENCE, FakeOidcProvider


@pytest.fixture
def provider() -> Iterator[FakeOidcProvider]:
    with FakeOidcProvider().serving() as fake:
        yield fake


def make_verifier(provider: FakeOidcProvider, timeout_s: float = 5.0) -> OidcVerifier:
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, timeout_s=timeout_s)
    verifier.refetch_interval_s = 0.0  # each test below is about one fetch, not the rate limit
    return verifier


async def refused(verifier: OidcVerifier, token: str) -> str:
    with pytest.raises(OidcError) as caught:
        await verifier.verify(token)
    assert token.split(".")[1] not in str(caught.value)
    return str(caught.value)


async def test_tokens_verify_over_http_and_keys_are_asked_for_politely(provider: FakeOidcProvider) -> None:
    verifier = make_verifier(provider)
    identity = await verifier.verify(provider.mint("sub-9", preferred_username="alice"))
    assert identity.owner == owners.oidc(provider.issuer, "sub-9")
    (discovery,) = provider.recorded("GET", provider.discovery_path)
    (certs,) = provider.recorded("GET", provider.jwks_path)
    for request in (discovery, certs):
        assert request["headers"]["accept"] == "application/json"
        assert request["headers"]["accept-encoding"] == "identity"
        assert request["status"] == 200


async def test_rotation_over_http(provider: FakeOidcProvider) -> None:
    verifier = make_verifier(provider)
    old = provider.mint("old")
    await verifier.verify(old)
    provider.rotate(keep_previous=False)
    assert (await verifier.verify(provider.mint("new"))).sub == "new"
    assert "not one of the issuer's" in await refused(verifier, old)


async def test_a_provider_that_is_down(provider: FakeOidcProvider) -> None:
    provider.down()
    reason = await refused(make_verifier(provider), provider.mint())
    assert "discovery document: HTTP 503" in reason


async def test_a_provider_that_is_slow(provider: FakeOidcProvider) -> None:
    provider.slow(2.0, path=provider.jwks_path, times=1)
    reason = await refused(make_verifier(provider, timeout_s=0.3), provider.mint())
    assert "key set" in reason and ("0.3 s" in reason or "ReadTimeout" in reason)


async def test_bad_json_and_non_objects(provider: FakeOidcProvider) -> None:
    verifier = make_verifier(provider)
    provider.bad_json(provider.jwks_path, times=1)
    assert "key set: the answer is not JSON" in await refused(verifier, provider.mint())
    provider.bad_json(provider.discovery_path, body="[1, 2]", times=1)
    assert "discovery document: the answer is not a JSON object" in await refused(verifier, provider.mint())
    provider.bad_json(provider.discovery_path, body="[" * 100_000, times=1)
    assert "the answer is not JSON" in await refused(verifier, provider.mint())


async def test_documents_are_bounded(provider: FakeOidcProvider) -> None:
    provider.bad_json(provider.jwks_path, body=" " * (MAX_DOCUMENT_BYTES + 1), times=1)
    reason = await refused(make_verifier(provider), provider.mint())
    assert f"larger than {MAX_DOCUMENT_BYTES} bytes" in reason


async def test_redirects_and_compression_are_not_followed(provider: FakeOidcProvider) -> None:
    verifier = make_verifier(provider)
    provider.add_fault({
        "match": {"path": provider.jwks_path}, "status": 302,
        "headers": {"Location": "http://127.0.0.1:9/elsewhere"}, "body": "",
    })  # fmt: skip
    assert "key set: HTTP 302" in await refused(verifier, provider.mint())
    provider.add_fault({
        "match": {"path": provider.jwks_path}, "status": 200,
        "headers": {"Content-Encoding": "gzip"}, "body": "{}",
    })  # fmt: skip
    assert "compressed" in await refused(verifier, provider.mint())
    assert (await verifier.verify(provider.mint("after"))).sub == "after"
