"""NATS JWTs and nkeys by hand: keys agree with the `nkeys` package, our JWTs verify and carry what
nats-server checks, and a request is accepted only when its envelope is the server's; garbage in
any field is a `RequestError` or a refusal reason, never another exception."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import nkeys
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from shared.auth import jwt, owners
from shared.auth.keys import (
    CurveKey,
    NkeyError,
    Role,
    Signer,
    decode_public,
    decode_seed,
    encode_public,
    is_public,
    new_seed,
)
from shared.auth.permissions import user_permissions
from tests.fakes.callout_server import FakeAuthServer, claims_of, sign

NOW = 1_800_000_000
ISSUER_SEED = new_seed(Role.ACCOUNT)
ISSUER = Signer(ISSUER_SEED, Role.ACCOUNT)
SERVER = FakeAuthServer(ISSUER.public_key)
PASSWORD = {"user": "alice", "pass": "alice-secret"}

# -- keys --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ACCOUNT, Role.SERVER, Role.USER])
def test_signing_keys_agree_with_the_nkeys_package(role: Role) -> None:
    seed = new_seed(role)
    ours, theirs = Signer(seed, role), nkeys.from_seed(seed.get_secret_value().encode())
    assert ours.public_key == theirs.public_key.decode()
    assert ours.sign(b"data") == theirs.sign(b"data")
    assert ours.public_key[0] == {Role.ACCOUNT: "A", Role.SERVER: "N", Role.USER: "U"}[role]


def test_public_keys_are_checked_for_role_length_and_checksum() -> None:
    key = ISSUER.public_key
    assert decode_public(key, Role.ACCOUNT) == decode_public(key, Role.ACCOUNT)
    flipped = key[:10] + ("B" if key[10] != "B" else "C") + key[11:]
    for bad, role in (
        (key, Role.USER),
        (flipped, Role.ACCOUNT),
        (key[:-1], Role.ACCOUNT),
        ("a" * 56, Role.ACCOUNT),
    ):
        assert not is_public(bad, role)
    with pytest.raises(NkeyError):
        decode_seed(ISSUER_SEED, Role.USER)
    with pytest.raises(NkeyError):
        encode_public(Role.USER, b"short")


def test_curve_keys_seal_for_each_other_only() -> None:
    ours, server, stranger = (CurveKey(new_seed(Role.CURVE)) for _ in range(3))
    assert ours.public_key.startswith("X") and is_public(ours.public_key, Role.CURVE)
    sealed = server.seal(b"request", ours.public_key)
    assert sealed.startswith(b"xkv1")
    assert ours.open(sealed, server.public_key) == b"request"
    for bad, sender in (
        (sealed, stranger.public_key),
        (sealed[:-1] + b"!", server.public_key),
        (b"xkv1", ""),
    ):
        with pytest.raises(NkeyError):
            ours.open(bad, sender or server.public_key)
    assert repr(ours) == f"CurveKey({ours.public_key})"  # never the seed


@given(st.binary(max_size=200))
def test_base64url_round_trips_without_padding(data: bytes) -> None:
    text = jwt.b64url(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert jwt.unb64url(text) == data


@pytest.mark.parametrize("text", ["YQ==", "a+b/", "a b", "\u00e9", "a"])
def test_base64url_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        jwt.unb64url(text)


# -- what we sign --------------------------------------------------------------------------------


def test_a_user_jwt_carries_what_the_server_checks() -> None:
    alice = owners.local("alice")
    permissions = user_permissions(alice.token)
    token = jwt.user_jwt(
        signer=ISSUER,
        user_nkey=SERVER.user_nkey,
        account="APP",
        name=str(alice),
        permissions=permissions,
        now=NOW,
        expires=NOW + 60,
    )
    assert "=" not in token
    claims = claims_of(token)
    assert claims["iss"] == ISSUER.public_key and claims["sub"] == SERVER.user_nkey
    assert (claims["aud"], claims["name"], claims["iat"], claims["exp"]) == (
        "APP",
        "local:alice",
        NOW,
        NOW + 60,
    )
    assert claims["nats"] == {**permissions.claims(), "type": "user", "version": 2}
    assert claims["jti"]
    with pytest.raises(ValueError):
        jwt.user_jwt(
            signer=ISSUER,
            user_nkey=SERVER.user_nkey,
            account="APP",
            name="x",
            permissions=permissions,
            now=NOW,
            expires=NOW,
        )


def test_a_response_holds_a_user_or_an_error() -> None:
    request = jwt.decode_request(SERVER.request(PASSWORD, NOW)[0].decode(), issuer=ISSUER.public_key, now=NOW)
    refusal = claims_of(jwt.authorization_response(signer=ISSUER, request=request, now=NOW, error="e" * 999))
    assert refusal["aud"] == SERVER.signer.public_key and refusal["sub"] == SERVER.user_nkey
    assert refusal["nats"] == {
        "error": "e" * jwt.MAX_ERROR_CHARS,
        "type": "authorization_response",
        "version": 2,
    }
    with pytest.raises(ValueError):
        jwt.authorization_response(signer=ISSUER, request=request, now=NOW)
    with pytest.raises(ValueError):
        jwt.authorization_response(signer=ISSUER, request=request, now=NOW, user="u", error="e")


# -- what the server sends -----------------------------------------------------------------------


def decode(claims: dict[str, Any], header: dict[str, Any] | None = None) -> jwt.AuthRequest:
    return jwt.decode_request(sign(claims, SERVER.signer, header), issuer=ISSUER.public_key, now=NOW)


def test_a_password_and_a_token_request_are_read() -> None:
    request = decode(SERVER.claims(PASSWORD, NOW))
    assert request.credentials == jwt.Password("alice", SecretStr("alice-secret"))
    assert (request.problem, request.client_host, request.user_nkey) == (None, "192.0.2.7", SERVER.user_nkey)
    assert "alice-secret" not in repr(request)
    request = decode(SERVER.claims({"auth_token": "tok-3f9a"}, NOW))
    assert isinstance(request.credentials, jwt.Token)
    assert request.credentials.token.get_secret_value() == "tok-3f9a"
    assert "tok-3f9a" not in repr(request)


def _set(path: tuple[str, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def change(claims: dict[str, Any]) -> None:
        for key in path[:-1]:
            claims = claims[key]
        if value is _DELETE:
            del claims[path[-1]]
        else:
            claims[path[-1]] = value

    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_set(("aud",), "someone-else"), "audience"),
        (_set(("sub",), encode_public(Role.ACCOUNT, bytes(32))), "another callout issuer"),
        (_set(("exp",), NOW - 60), "expired"),
        (_set(("exp",), "soon"), "exp"),
        (_set(("iss",), SERVER.user_nkey), "not signed"),
        (_set(("nats", "server_id", "id"), encode_public(Role.SERVER, bytes(32))), "not the server"),
        (_set(("nats", "user_nkey"), ISSUER.public_key), "user public key"),
        (_set(("nats", "server_id", "xkey"), "Xnot"), "curve"),
        (_set(("nats", "type"), "user"), "nats.type"),
        (_set(("nats", "version"), 1), "nats.version"),
        (_set(("nats", "server_id"), _DELETE), "nats.server_id"),
        (_set(("nats",), "x" * 70_000), "longer than"),
    ],
)
def test_a_request_without_the_servers_envelope_is_refused(
    change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    claims = SERVER.claims(PASSWORD, NOW)
    change(claims)
    with pytest.raises(jwt.RequestError, match=reason):
        decode(claims)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "###.###.###",
        f"{jwt.b64url(b'[]')}.{jwt.b64url(b'{}')}.{jwt.b64url(b'')}",
        f"{jwt.b64url(b'{}')}.{jwt.b64url(b'[' * 60000)}.{jwt.b64url(b'')}",
        f"{jwt.b64url(json.dumps(jwt.HEADER).encode())}.{jwt.b64url(b'1e99999')}.{jwt.b64url(b'')}",
    ],
)
def test_what_is_not_a_jwt_is_refused(token: str) -> None:
    with pytest.raises(jwt.RequestError):
        jwt.decode_request(token, issuer=ISSUER.public_key, now=NOW)


def test_the_header_must_name_the_nkey_algorithm() -> None:
    with pytest.raises(jwt.RequestError, match="header"):
        decode(SERVER.claims(PASSWORD, NOW), {"typ": "JWT", "alg": "none"})
    assert decode(SERVER.claims(PASSWORD, NOW), {"typ": "jwt", "alg": "ed25519-nkey"}).problem is None


@pytest.mark.parametrize(
    ("connect_opts", "reason"),
    [
        ({}, "no credentials"),
        ({"user": "alice"}, "both a name and a password"),
        ({"pass": "x"}, "both a name and a password"),
        ({**PASSWORD, "auth_token": "t"}, "both a token"),
        ({**PASSWORD, "jwt": "eyJ"}, "not accepted"),
        ({"nkey": encode_public(Role.USER, bytes(32)), "sig": "s"}, "not accepted"),
        ({"user": 5, "pass": "x"}, "connect_opts.user: string_type"),
        ({"user": "a", "pass": "p" * 5000}, "connect_opts.pass: too_long"),
        ({"auth_token": "t" * 20_000}, "connect_opts.auth_token: too_long"),
        ({"auth_token": ["t"]}, "connect_opts.auth_token"),
        ({**PASSWORD, "protocol": -1}, "connect_opts.protocol"),
    ],
)
def test_unusable_client_fields_are_a_reason_to_refuse(connect_opts: dict[str, Any], reason: str) -> None:
    claims = SERVER.claims({}, NOW)
    claims["nats"]["connect_opts"] = {**connect_opts}
    request = decode(claims)
    assert request.credentials is None
    assert request.problem is not None and reason in request.problem
    assert "p" * 50 not in request.problem and "t" * 50 not in request.problem  # no values in reasons


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
) | st.sampled_from(["x" * 70_000, 2**70, -1, "", [], {}])


def paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    return found


ALL_PATHS = paths(SERVER.claims(PASSWORD, NOW))


@settings(max_examples=300)
@given(st.sampled_from(ALL_PATHS), json_values | st.just(_DELETE))
def test_garbage_in_any_field_is_refused_or_read_never_a_crash(path: tuple[str, ...], value: object) -> None:
    claims = copy.deepcopy(SERVER.claims(PASSWORD, NOW))
    _set(path, value)(claims)
    try:
        request = decode(claims)
    except jwt.RequestError:
        return
    # The envelope survived: the credentials were read as sent, or refused with a reason.
    if request.credentials is None:
        assert request.problem
        return
    assert request.problem is None
    if path[:2] != ("nats", "connect_opts") or path[2:] not in ((), ("user",), ("pass",), ("auth_token",)):
        assert request.credentials == jwt.Password("alice", SecretStr("alice-secret"))
