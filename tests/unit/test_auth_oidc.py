"""OIDC bearer tokens (shared/auth/oidc.py): the checks, the keys' caching, rotation and refetch
limits, against the fake provider's own ASGI app in process (its real documents, no sockets; the
HTTP fetch itself is tested in tests/integration/test_oidc_verifier.py)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from shared.auth import owners
from shared.auth.callout import Admit, Refuse
from shared.auth.oidc import (
    MAX_KEYS,
    MAX_TOKEN_CHARS,
    REFETCH_INTERVAL_S,
    STALE_GRACE_S,
    KeySet,
    OidcError,
    OidcVerifier,
    key_set,
    may_fetch,
    still_usable,
    url_problem,
    wants_fetch,
)
from shared.auth.verifiers import OidcTokens
from tests.fakes.oidc import DEFAULT_AUDIENCE, FakeOidcProvider, b64url

ISSUER_BASE = "https://idp.example.org"


@pytest.fixture
def provider() -> FakeOidcProvider:
    fake = FakeOidcProvider()
    fake.base_url = ISSUER_BASE  # not served: its ASGI app answers `fake.fetch`
    return fake


@pytest.fixture
def verifier(provider: FakeOidcProvider) -> OidcVerifier:
    return OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, fetch=provider.fetch)


async def refused(verifier: OidcVerifier, token: str) -> str:
    """The reason a token is refused, checked to hold no part of the token."""
    with pytest.raises(OidcError) as caught:
        await verifier.verify(token)
    reason = str(caught.value)
    assert all(part not in reason for part in token.split(".") if len(part) > 3), reason
    return reason


def fetches(provider: FakeOidcProvider) -> tuple[int, int]:
    return len(provider.recorded("GET", provider.discovery_path)), len(
        provider.recorded("GET", provider.jwks_path)
    )


# -- what a token proves ----------------------------------------------------------------------------


async def test_the_owner_is_issuer_and_sub_never_preferred_username(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    token = provider.mint("sub-1", preferred_username="alice", expires_in=120)
    identity = await verifier.verify(token)
    assert identity.owner == owners.oidc(provider.issuer, "sub-1")
    assert identity.owner != owners.local("alice")
    assert identity.owner.token != owners.local("alice").token
    assert (identity.sub, identity.preferred_username) == ("sub-1", "alice")
    assert abs(identity.expires - (time.time() + 120)) < 5
    assert isinstance(identity.expires, int)
    # Another provider's user with the same sub is another owner.
    assert identity.owner != owners.oidc(provider.issuer + "/other", "sub-1")


async def test_aud_may_be_a_list_holding_the_audience(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    identity = await verifier.verify(provider.mint("s", aud=["account", DEFAULT_AUDIENCE]))
    assert identity.sub == "s"


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        ({"aud": "another-client"}, "not for this audience"),
        ({"aud": ["account"]}, "not for this audience"),
        ({"aud": None}, "no aud claim"),
        ({"issuer": "https://evil.example.org/realms/science"}, "another issuer"),
        ({"expires_in": -60}, "expired"),
        ({"drop": ["exp"]}, "no exp claim"),
        ({"drop": ["sub"]}, "no sub claim"),
        ({"drop": ["iss"]}, "no iss claim"),
        # A fixed date far ahead: a time taken at collection would pass during a long run.
        ({"claims": {"nbf": 4_102_444_800}}, "not valid yet"),  # 2100-01-01
        ({"claims": {"sub": 42}}, "token is not valid"),
        ({"claims": {"exp": "tomorrow"}}, "well-formed"),
        ({"sub": "bad\nsub"}, "cannot be an owner"),
        ({"sub": "x" * 300}, "cannot be an owner"),
        ({"foreign": True, "kid": None}, "signature does not verify"),
    ],
)
async def test_tokens_with_bad_claims_are_refused(
    provider: FakeOidcProvider, verifier: OidcVerifier, mint: dict[str, Any], reason: str
) -> None:
    assert reason in await refused(verifier, provider.mint(**mint))


async def test_the_issuer_must_match_exactly(provider: FakeOidcProvider, verifier: OidcVerifier) -> None:
    assert "another issuer" in await refused(verifier, provider.mint(issuer=provider.issuer + "/"))
    assert "another issuer" in await refused(verifier, provider.mint(issuer=provider.issuer.upper()))


async def test_leeway_covers_small_clock_skew_only(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    assert (await verifier.verify(provider.mint(expires_in=-2))).sub  # within the 5 s leeway
    strict = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, leeway_s=0, fetch=provider.fetch)
    assert "expired" in await refused(strict, provider.mint(expires_in=-2))
    assert "expired" in await refused(verifier, provider.mint(expires_in=-30))


async def test_a_foreign_key_is_refused_under_any_kid(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    forged = provider.mint(foreign=True, kid=provider.current.kid)
    assert "signature does not verify" in await refused(verifier, forged)
    unknown = provider.mint(foreign=True)  # the foreign key's own kid
    assert "not one of the issuer's" in await refused(verifier, unknown)


def _hs256_with_public_key(provider: FakeOidcProvider) -> str:
    """The classic confusion: HMAC keyed with the issuer's public key, which anyone has."""
    pem = provider.current.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": provider.current.kid}
    claims = {"iss": provider.issuer, "sub": "s", "aud": DEFAULT_AUDIENCE, "exp": int(time.time()) + 60}
    signing_input = ".".join(b64url(json.dumps(part).encode()) for part in (header, claims))
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def _unsigned(provider: FakeOidcProvider) -> str:
    header = {"alg": "none", "typ": "JWT"}
    claims = {"iss": provider.issuer, "sub": "s", "aud": DEFAULT_AUDIENCE, "exp": int(time.time()) + 60}
    return ".".join(b64url(json.dumps(part).encode()) for part in (header, claims)) + "."


async def test_only_asymmetric_algorithms_and_the_keys_own(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    assert "algorithm is not one of" in await refused(verifier, _hs256_with_public_key(provider))
    assert "algorithm is not one of" in await refused(verifier, _unsigned(provider))
    # The JWKS says the key is for RS256: a PS256 token under it is refused, although it verifies.
    assert "not its signing key's" in await refused(verifier, provider.mint(alg="PS256"))
    assert fetches(provider) == (1, 1)
    # A key that states PS256 verifies PS256 tokens, and no RS256 ones.
    ps_provider = FakeOidcProvider(alg="PS256")
    ps_provider.base_url = ISSUER_BASE
    ps_verifier = OidcVerifier(ps_provider.issuer, DEFAULT_AUDIENCE, fetch=ps_provider.fetch)
    assert (await ps_verifier.verify(ps_provider.mint("p"))).sub == "p"
    assert "not its signing key's" in await refused(ps_verifier, ps_provider.mint(alg="RS256"))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "not a signed JWT"),
        ("not-a-jwt", "not a signed JWT"),
        ("a.b.c", "not a signed JWT"),
        ("é.é.é", "not a signed JWT"),
        ("x" * (MAX_TOKEN_CHARS + 1), "longer than"),
    ],
)
async def test_garbage_is_refused_before_any_fetch(
    provider: FakeOidcProvider, verifier: OidcVerifier, token: str, reason: str
) -> None:
    assert reason in await refused(verifier, token)
    assert fetches(provider) == (0, 0)


async def test_headers_with_critical_extensions_or_odd_kids_are_refused(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    assert "critical" in await refused(verifier, provider.mint(header={"crit": ["b64"], "b64": True}))
    assert await refused(verifier, provider.mint(header={"crit": ["exp"], "exp": 1}))
    assert "kid is not" in await refused(verifier, provider.mint(kid="k" * 300))
    assert await refused(verifier, provider.mint(header={"kid": 7}))
    assert fetches(provider) == (0, 0)


async def test_a_token_without_kid_needs_a_single_key(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    assert (await verifier.verify(provider.mint("n", kid=None))).sub == "n"
    provider.rotate()
    verifier.refetch_interval_s = 0.0
    await verifier.verify(provider.mint())  # the new kid: refetched, two keys now
    assert "names no key" in await refused(verifier, provider.mint(kid=None))


async def test_preferred_username_is_display_only_and_bounded(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    for odd in ("ali\u202ece", "bob\n", "x" * 300, "", 42):
        identity = await verifier.verify(provider.mint("s", claims={"preferred_username": odd}))
        assert identity.preferred_username is None
    assert (await verifier.verify(provider.mint("s", preferred_username="Zoë"))).preferred_username == "Zoë"


# -- keys: caching, rotation, refetch limits ----------------------------------------------------------


async def test_keys_are_cached_and_fetched_once_for_concurrent_callers(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    tokens = [provider.mint(f"s{i}") for i in range(20)]
    identities = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert [i.sub for i in identities] == [f"s{i}" for i in range(20)]
    await verifier.verify(provider.mint())
    assert fetches(provider) == (1, 1)


async def test_rotation_refetches_once_and_unknown_kids_are_rate_limited(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    await verifier.verify(provider.mint())
    assert verifier.refetch_interval_s == REFETCH_INTERVAL_S == 30.0
    # Made-up kids within the interval: refused without asking the provider again.
    for i in range(10):
        assert "not one of the issuer's" in await refused(verifier, provider.mint(kid=f"made-up-{i}"))
    assert fetches(provider) == (1, 1)
    # A rotation within the interval is seen only once the interval has passed.
    old_token = provider.mint("old")
    provider.rotate(keep_previous=True)
    new_token = provider.mint("new")
    assert "not one of the issuer's" in await refused(verifier, new_token)
    verifier.refetch_interval_s = 0.2
    await asyncio.sleep(0.25)
    assert (await verifier.verify(new_token)).sub == "new"
    assert (await verifier.verify(old_token)).sub == "old"  # still published
    assert fetches(provider) == (2, 2)
    # The old key withdrawn: its tokens fail once the keys are refetched (a new unknown kid does it).
    provider.rotate(keep_previous=False)
    await asyncio.sleep(0.25)
    assert (await verifier.verify(provider.mint("newest"))).sub == "newest"
    assert "not one of the issuer's" in await refused(verifier, old_token)


async def test_keys_are_refetched_after_cache_s(provider: FakeOidcProvider) -> None:
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, cache_s=0.2, fetch=provider.fetch)
    verifier.refetch_interval_s = 0.0
    await verifier.verify(provider.mint())
    await asyncio.sleep(0.25)
    await verifier.verify(provider.mint())
    assert fetches(provider) == (2, 2)


async def test_stale_keys_serve_while_the_provider_is_down(provider: FakeOidcProvider) -> None:
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, cache_s=0.2, fetch=provider.fetch)
    verifier.refetch_interval_s = 0.0
    await verifier.verify(provider.mint())
    provider.down()
    await asyncio.sleep(0.25)
    assert (await verifier.verify(provider.mint("during"))).sub == "during"
    assert len(provider.recorded("GET", provider.discovery_path)) == 2  # it did try


async def test_no_keys_no_tokens_with_the_reason(provider: FakeOidcProvider, verifier: OidcVerifier) -> None:
    provider.down(times=1)
    reason = await refused(verifier, provider.mint())
    assert "not available" in reason and "discovery document" in reason
    # Within the refetch interval nothing is asked, even though the provider is back.
    assert "not available" in await refused(verifier, provider.mint())
    assert fetches(provider) == (1, 0)
    verifier.refetch_interval_s = 0.0
    assert (await verifier.verify(provider.mint("back"))).sub == "back"


async def test_a_caller_that_gives_up_leaves_the_fetch_to_finish(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    provider.slow(0.4, path=provider.jwks_path, times=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(verifier.verify(provider.mint()), 0.1)
    assert (await verifier.verify(provider.mint("patient"))).sub == "patient"
    assert fetches(provider) == (1, 1)


async def test_a_slow_provider_times_out(provider: FakeOidcProvider) -> None:
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, timeout_s=0.2, fetch=provider.fetch)
    provider.slow(1.0, times=1)
    assert "did not arrive within 0.2 s" in await refused(verifier, provider.mint())


async def test_the_discovery_document_must_name_this_issuer(provider: FakeOidcProvider) -> None:
    provider.advertised_issuer = "https://idp.example.org/realms/other"
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, fetch=provider.fetch)
    assert "names another issuer" in await refused(verifier, provider.mint())
    assert fetches(provider) == (1, 0)  # no key set fetched for it


async def test_a_jwks_uri_in_clear_to_another_host_is_refused(provider: FakeOidcProvider) -> None:
    provider.advertised_jwks_uri = "http://keys.example.org/certs"
    verifier = OidcVerifier(provider.issuer, DEFAULT_AUDIENCE, fetch=provider.fetch)
    assert "jwks_uri must be an https URL" in await refused(verifier, provider.mint())


async def test_bad_json_from_the_provider(provider: FakeOidcProvider, verifier: OidcVerifier) -> None:
    provider.bad_json(provider.jwks_path, times=1)
    assert "key set could not be fetched" in await refused(verifier, provider.mint())


# -- the pure parts -------------------------------------------------------------------------------------


def test_the_constructor_refuses_what_cannot_be_safe() -> None:
    with pytest.raises(ValueError, match="audience is required"):
        OidcVerifier(ISSUER_BASE, "")
    with pytest.raises(ValueError, match="audience is required"):
        OidcVerifier(ISSUER_BASE, "  ")
    for issuer, problem in [
        ("http://idp.example.org", "https"),
        ("https://idp.example.org/?realm=x", "query"),
        ("https://idp.example.org/#x", "fragment"),
        ("https://user:pw@idp.example.org", "user information"),
        ("idp.example.org", "host"),
        ("https://", "host"),
        ("https://idp.example.org:notaport", "not a URL"),
    ]:
        with pytest.raises(ValueError, match=problem):
            OidcVerifier(issuer, "aud")
    with pytest.raises(ValueError, match="leeway"):
        OidcVerifier(ISSUER_BASE, "aud", leeway_s=-1)
    # Loopback may be plain http (a provider on the same machine, the tests' fake).
    for local in ("http://127.0.0.1:8080/realms/x", "http://localhost/x", "http://[::1]:80"):
        assert OidcVerifier(local, "aud").issuer == local


def test_url_rules() -> None:
    assert url_problem("https://idp.example.org/realms/x") is None
    assert url_problem("https://idp.example.org/certs?v=2") is None
    assert url_problem("https://idp.example.org/certs?v=2", query_allowed=False) == "must not have a query"
    assert url_problem("https://idp.example.org/" + "a" * 3000) == "is longer than 2048 characters"
    assert url_problem("https://idp.example.org/a b") is not None
    assert url_problem("http://10.0.0.1/certs") is not None


def _jwk(key: Any, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        return {"kty": "RSA", "n": b64url(n), "e": "AQAB", **extra}
    size = (key.curve.key_size + 7) // 8
    crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[key.curve.name]
    return {
        "kty": "EC",
        "crv": crv,
        "x": b64url(numbers.x.to_bytes(size, "big")),
        "y": b64url(numbers.y.to_bytes(size, "big")),
        **extra,
    }


def test_key_sets_keep_only_strong_public_signing_keys() -> None:
    strong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    p521 = ec.generate_private_key(ec.SECP521R1())
    private_numbers = strong.private_numbers()
    document = {
        "keys": [
            _jwk(strong, kid="rsa", alg="RS256", use="sig"),
            _jwk(strong, kid="rsa-noalg"),
            _jwk(strong, kid="enc", alg="RSA-OAEP", use="enc"),
            _jwk(strong, kid="enc2", use="enc"),
            _jwk(strong, kid="verify-not", key_ops=["encrypt"]),
            _jwk(weak, kid="weak", alg="RS256"),
            _jwk(p256, kid="p256"),
            _jwk(p384, kid="p384", alg="ES384"),
            _jwk(p256, kid="p256-as-384", alg="ES384"),
            _jwk(p521, kid="p521"),
            {"kty": "oct", "kid": "hmac", "k": b64url(b"secret"), "alg": "HS256"},
            {"kty": "RSA", "kid": "rsa-hs", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "none", "alg": "none", "n": "AQAB", "e": "AQAB"},
            {**_jwk(strong, kid="private"), "d": b64url(private_numbers.d.to_bytes(256, "big"))},
            {"kty": "RSA", "kid": "broken", "n": 5, "e": []},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64url(bytes(32))},
            "not a key",
            {"kty": "RSA", "kid": "x" * 300, **_jwk(strong)},
        ]
    }
    keys = key_set(document, fetched_at=0.0)
    assert sorted((k.key_id, k.algorithm_name) for k in keys.keys) == [
        ("p256", "ES256"),
        ("p384", "ES384"),
        ("rsa", "RS256"),
        ("rsa-noalg", "RS256"),
    ]
    assert keys.find("rsa-noalg", "PS256") is None  # a key without alg is RS256 only
    unusable: list[dict[str, Any]] = [
        {},
        {"keys": "x"},
        {"keys": []},
        {"keys": [{"kty": "oct", "k": "c2Vj"}]},
    ]
    for bad in unusable:
        with pytest.raises(OidcError):
            key_set(bad, 0.0)
    with pytest.raises(OidcError, match=f"more than {MAX_KEYS}"):
        key_set({"keys": [_jwk(strong)] * (MAX_KEYS + 1)}, 0.0)


def test_when_keys_are_fetched() -> None:
    strong = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = key_set({"keys": [_jwk(strong, kid="k")]}, fetched_at=100.0)
    assert wants_fetch(None, "k", 0.0, 600)
    assert not wants_fetch(keys, "k", 101.0, 600)
    assert not wants_fetch(keys, None, 101.0, 600)  # the sole key
    assert wants_fetch(keys, "other", 101.0, 600)  # an unknown kid: a rotation?
    assert wants_fetch(keys, "k", 700.0, 600)  # older than cache_s
    assert not KeySet((), 0.0).knows(None)
    assert may_fetch(None, 0.0)
    assert not may_fetch(100.0, 100.0 + REFETCH_INTERVAL_S - 0.1)
    assert may_fetch(100.0, 100.0 + REFETCH_INTERVAL_S)
    assert still_usable(keys, 100.0 + 600 + STALE_GRACE_S - 1, 600)
    assert not still_usable(keys, 100.0 + 600 + STALE_GRACE_S, 600)


async def test_the_callout_verifier_admits_until_exp_and_refuses_with_the_reason(
    provider: FakeOidcProvider, verifier: OidcVerifier
) -> None:
    tokens = OidcTokens(verifier)
    token = provider.mint("sub-7", preferred_username="alice", expires_in=90)
    admitted = await tokens.token(SecretStr(token))
    assert isinstance(admitted, Admit)
    assert admitted.owner == owners.oidc(provider.issuer, "sub-7")
    assert admitted.expires == json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]
    refused_token = provider.mint("sub-7", aud="someone-else")
    refusal = await tokens.token(SecretStr(refused_token))
    assert refusal == Refuse("the token is not for this audience")
