"""The callout responder without a server: requests as nats-server seals and signs them
(tests/fakes/callout_server.py), answers read back as the server reads them."""

from __future__ import annotations

import asyncio
import copy
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from shared.auth import owners
from shared.auth.callout import (
    AUTH_SUBJECT,
    XKEY_HEADER,
    Admit,
    CalloutConfig,
    CalloutResponder,
    Decision,
    Refuse,
    Verifiers,
    in_thread,
)
from shared.auth.jwt import LEEWAY_S
from shared.auth.keys import Role, new_seed
from shared.auth.permissions import user_permissions
from tests.fakes.callout_server import FakeAuthServer, claims_of, sign
from tests.fakes.identities import ISSUER, FakeIdentities

NOW = 1_800_000_000
SECRET = "alice-secret-9c1e"
TOKEN = "carol-token-77d2"


def make(
    verifier: Any = None, *, xkey: bool = True, **options: Any
) -> tuple[CalloutResponder, FakeAuthServer]:
    identities = FakeIdentities(passwords={"alice": SECRET}, tokens={TOKEN: ("carol-sub", NOW + 600)})
    config = CalloutConfig(
        issuer_seed=new_seed(Role.ACCOUNT),
        account="APP",
        xkey_seed=new_seed(Role.CURVE) if xkey else None,
        **options,
    )
    responder = CalloutResponder(config, verifier or identities, clock=lambda: NOW + 0.4)
    return responder, FakeAuthServer(responder.issuer, responder.xkey)


async def ask(responder: CalloutResponder, server: FakeAuthServer, **connect_opts: Any) -> dict[str, Any]:
    data, header = server.request(connect_opts, NOW)
    return server.read(await responder.answer(data, header))


async def test_a_local_user_gets_a_user_jwt_with_their_permissions() -> None:
    responder, server = make(service_consumers=frozenset({"offers-requests"}))
    answer = await ask(responder, server, user="alice", **{"pass": SECRET})
    user = claims_of(answer["jwt"])
    alice = owners.local("alice")
    assert user["iss"] == responder.issuer and user["sub"] == server.user_nkey
    assert (user["aud"], user["name"]) == ("APP", "local:alice")
    assert user["exp"] == NOW + responder.config.password_ttl_s
    expected = user_permissions(alice.token, service_consumers={"offers-requests"}).claims()
    assert user["nats"] == {**expected, "type": "user", "version": 2}


async def test_a_token_identity_lasts_as_long_as_its_token() -> None:
    responder, server = make()
    user = claims_of((await ask(responder, server, auth_token=TOKEN))["jwt"])
    assert user["name"] == str(owners.oidc(ISSUER, "carol-sub"))
    assert user["exp"] == NOW + 600


@pytest.mark.parametrize(
    ("expires", "outcome"),
    [(NOW - 1, "expired"), (NOW, "expired"), (NOW + 10**9, NOW + 24 * 3600)],
)
async def test_token_expiry_is_bounded(expires: int, outcome: str | int) -> None:
    async def token(_: SecretStr) -> Decision:
        return Admit(owners.oidc(ISSUER, "carol-sub"), expires=expires)

    responder, server = make(Verifiers(check_token=token))
    answer = await ask(responder, server, auth_token=TOKEN)
    if isinstance(outcome, int):
        assert claims_of(answer["jwt"])["exp"] == outcome
    else:
        assert outcome in answer["error"]


async def hangs(*_: object) -> Decision:
    await asyncio.sleep(10)
    return Refuse("late")


async def raises(*_: object) -> Decision:
    raise RuntimeError(f"database said no to {SECRET}")


async def answers_nonsense(*_: object) -> Decision:
    return "yes"  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("verifier", "connect_opts", "reason"),
    [
        (None, {"user": "alice", "pass": "wrong"}, "wrong password"),
        (None, {"auth_token": "forged-token"}, "token is not valid"),
        (None, {}, "no credentials"),
        (None, {"user": "alice", "pass": SECRET, "auth_token": TOKEN}, "both a token"),
        (Verifiers(), {"auth_token": TOKEN}, "tokens are not accepted"),
        (Verifiers(), {"user": "alice", "pass": SECRET}, "passwords are not accepted"),
        (Verifiers(check_password=hangs), {"user": "alice", "pass": SECRET}, "no answer within 0.2 s"),
        (
            Verifiers(check_password=raises),
            {"user": "alice", "pass": SECRET},
            "verifier failed (RuntimeError)",
        ),
        (Verifiers(check_token=answers_nonsense), {"auth_token": TOKEN}, "neither admit nor refuse"),
    ],
)
async def test_refusals_say_why_and_never_show_the_secret(
    verifier: Any, connect_opts: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    responder, server = make(verifier, verify_timeout_s=0.2)
    with caplog.at_level(logging.INFO, logger="shared.auth.callout"):
        answer = await ask(responder, server, **connect_opts)
    assert "jwt" not in answer and reason in answer["error"]
    assert reason in caplog.text and "192.0.2.7" in caplog.text
    for secret in (SECRET, TOKEN, "forged-token"):
        assert secret not in caplog.text and secret not in answer["error"]


async def test_without_an_xkey_requests_and_answers_are_in_clear() -> None:
    responder, server = make(xkey=False)
    assert responder.xkey is None
    data, header = server.request({"user": "alice", "pass": SECRET}, NOW)
    assert header is None and data.startswith(b"eyJ")
    reply = await responder.answer(data, header)
    assert "jwt" in server.read(reply)
    assert await responder.answer(data, "X" * 56) == b""  # sealed, says the header: it is not


async def test_requests_that_cannot_be_verified_get_an_empty_answer(caplog: pytest.LogCaptureFixture) -> None:
    responder, server = make()
    token = sign(server.claims({"user": "alice", "pass": SECRET}, NOW), server.signer)
    assert server.curve is not None and responder.xkey is not None
    stranger = FakeAuthServer(responder.issuer, responder.xkey)
    assert stranger.curve is not None
    cases = [
        (token.encode(), None),  # in clear although an xkey is configured
        (token.encode(), server.curve.public_key),  # not sealed
        (server.curve.seal(token.encode(), responder.xkey), stranger.curve.public_key),  # sealed by another
        (stranger.seal(token)[0], stranger.curve.public_key),  # the header's key is not the claims' key
        (server.curve.seal(b"\xff" * 10, responder.xkey), server.curve.public_key),
        (b"x" * 200_000, server.curve.public_key),
    ]
    with caplog.at_level(logging.WARNING, logger="shared.auth.callout"):
        for data, header in cases:
            assert await responder.answer(data, header) == b""
    assert caplog.text.count("refused") == len(cases)
    assert SECRET not in caplog.text


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300), st.sampled_from([None, "", "Xgarbage"]))
async def test_random_bytes_are_refused_without_a_crash(data: bytes, header: str | None) -> None:
    responder, _ = make()
    assert await responder.answer(data, header) == b""


GARBAGE = st.one_of(
    st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=3), st.just("x" * 70_000)
)
FIELDS = [
    ("iss",),
    ("sub",),
    ("aud",),
    ("exp",),
    ("nats",),
    ("nats", "type"),
    ("nats", "version"),
    ("nats", "user_nkey"),
    ("nats", "server_id"),
    ("nats", "server_id", "id"),
    ("nats", "server_id", "xkey"),
    ("nats", "client_info"),
    ("nats", "client_info", "host"),
    ("nats", "connect_opts"),
    ("nats", "connect_opts", "user"),
    ("nats", "connect_opts", "pass"),
    ("nats", "connect_opts", "auth_token"),
]


@settings(max_examples=150)
@given(st.sampled_from(FIELDS), GARBAGE)
async def test_garbage_in_a_signed_request_is_refused_without_a_crash(
    path: tuple[str, ...], value: object
) -> None:
    responder, server = make()
    claims = copy.deepcopy(server.claims({"user": "alice", "pass": SECRET}, NOW))
    target = claims
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    data, header = server.seal(sign(claims, server.signer))
    reply = await responder.answer(data, header)
    if reply and "jwt" in server.read(reply):  # admitted: only if what was put there is harmless
        assert harmless(path, value), (path, value)


def harmless(path: tuple[str, ...], value: object) -> bool:
    """What may replace a field of a signed request and still be admitted: a short client host, an
    expiry that has not passed (within the allowed clock skew), or an empty token beside the
    password (what a client sends that has no token: the password is checked)."""
    if path == ("nats", "connect_opts", "auth_token"):
        return value == ""
    if path == ("nats", "client_info", "host"):
        return isinstance(value, str) and len(value) <= 256
    if path == ("exp",):
        return type(value) is int and NOW - LEEWAY_S <= value < 2**53
    return False


@dataclass
class FakeMsg:
    data: bytes
    headers: dict[str, str] | None
    reply: str = "_INBOX.reply"
    answers: list[bytes] = field(default_factory=list)

    async def respond(self, payload: bytes) -> None:
        self.answers.append(payload)


@dataclass
class FakeConnection:
    subscribed: dict[str, Callable[[FakeMsg], Awaitable[None]]] = field(default_factory=dict)

    async def subscribe(self, subject: str, cb: Callable[[FakeMsg], Awaitable[None]]) -> FakeSubscription:
        self.subscribed[subject] = cb
        return FakeSubscription(self, subject)


@dataclass
class FakeSubscription:
    connection: FakeConnection
    subject: str

    async def unsubscribe(self) -> None:
        del self.connection.subscribed[self.subject]


async def test_requests_are_answered_concurrently_up_to_a_bound() -> None:
    release = asyncio.Event()

    async def slow(username: str, _: SecretStr) -> Decision:
        await release.wait()
        return Admit(owners.local(username))

    responder, server = make(Verifiers(check_password=slow), max_in_flight=2)
    connection = FakeConnection()
    await responder.start(connection)  # type: ignore[arg-type]
    deliver = connection.subscribed[AUTH_SUBJECT]
    messages = []
    for _ in range(3):
        data, header = server.request({"user": "alice", "pass": SECRET}, NOW)
        messages.append(FakeMsg(data, {XKEY_HEADER: header} if header else None))
        await deliver(messages[-1])
    await asyncio.sleep(0.05)
    assert [m.answers for m in messages] == [[], [], [b""]]  # the third was refused at once
    release.set()
    await asyncio.sleep(0.05)
    assert all("jwt" in server.read(m.answers[0]) for m in messages[:2])
    await responder.stop()
    assert connection.subscribed == {}


async def test_stop_abandons_requests_in_flight() -> None:
    responder, server = make(Verifiers(check_password=hangs), verify_timeout_s=60)
    connection = FakeConnection()
    await responder.start(connection)  # type: ignore[arg-type]
    data, header = server.request({"user": "alice", "pass": SECRET}, NOW)
    msg = FakeMsg(data, {XKEY_HEADER: header} if header else None)
    await connection.subscribed[AUTH_SUBJECT](msg)
    await asyncio.sleep(0.01)
    await asyncio.wait_for(responder.stop(), 1)
    assert msg.answers == []


async def test_a_blocking_check_runs_off_the_event_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def check(username: str, password: SecretStr) -> Decision:
        seen.append(threading.get_ident())
        return Admit(owners.local(username)) if password.get_secret_value() == SECRET else Refuse("no")

    responder, server = make(Verifiers(check_password=in_thread(check)))
    assert "jwt" in await ask(responder, server, user="alice", **{"pass": SECRET})
    assert seen and seen[0] != loop_thread
