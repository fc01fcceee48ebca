"""The config-mode auth callout responder: nats-server asks, on ``$SYS.REQ.USER.AUTH``, whether a
connecting client may in; we answer with a signed user JWT holding that owner's permissions, or a
signed refusal.

nats-server sends every connection that is not one of its ``auth_users`` here, waits
``authorization.timeout`` (2 s by default) and refuses on silence, on an empty answer or on an
error. The responder subscribes as the callout's own user (which must be in ``auth_users``), opens
the request when an xkey is configured (``xkey`` in ``auth_callout``), verifies it
(`shared.auth.jwt`), and asks the injected `Verifier` about the credentials: a local user name
and password, or a bearer token passed as the NATS token (OIDC). The verifier says who the owner
is, or why not; it never sees the request, and nothing here logs a password or a token.

Each request is handled in its own task, at most `max_in_flight` at once (more are refused at
once), and a verifier gets `verify_timeout_s`; a verifier that hashes passwords must not block the
loop (`in_thread` runs a blocking one in a worker thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ParamSpec, Protocol

from pydantic import SecretStr

from shared.auth import jwt
from shared.auth.keys import CurveKey, NkeyError, Role, Signer
from shared.auth.owners import Owner
from shared.auth.permissions import user_permissions

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
XKEY_HEADER = "Nats-Server-Xkey"
_XKEY_OVERHEAD = 64  # version tag, nonce and box authenticator of a sealed request
log = logging.getLogger("shared.auth.callout")
P = ParamSpec("P")


@dataclass(frozen=True)
class Admit:
    """Let `owner` in; `expires` (Unix seconds) is when its credential stops being valid, e.g. an
    OIDC token's ``exp``: the server closes the connection then."""

    owner: Owner
    expires: int | None = None


@dataclass(frozen=True)
class Refuse:
    """Keep the client out; `reason` is logged and sent to the server, so it never holds a secret."""

    reason: str


Decision = Admit | Refuse


class Verifier(Protocol):
    async def password(self, username: str, password: SecretStr) -> Decision: ...

    async def token(self, token: SecretStr) -> Decision: ...


@dataclass(frozen=True)
class Verifiers:
    """A `Verifier` from two callables; a missing one refuses that kind of credential."""

    check_password: Callable[[str, SecretStr], Awaitable[Decision]] | None = None
    check_token: Callable[[SecretStr], Awaitable[Decision]] | None = None

    async def password(self, username: str, password: SecretStr) -> Decision:
        if self.check_password is None:
            return Refuse("passwords are not accepted")
        return await self.check_password(username, password)

    async def token(self, token: SecretStr) -> Decision:
        if self.check_token is None:
            return Refuse("tokens are not accepted")
        return await self.check_token(token)


def in_thread(check: Callable[P, Decision]) -> Callable[P, Awaitable[Decision]]:
    """A blocking check (a password hash takes tens of milliseconds) run in a worker thread."""

    @functools.wraps(check)
    async def run(*args: P.args, **kwargs: P.kwargs) -> Decision:
        return await asyncio.to_thread(check, *args, **kwargs)

    return run


@dataclass(frozen=True)
class CalloutConfig:
    """`issuer_seed` is the account seed (``SA…``) whose public key is ``auth_callout.issuer``;
    `account` the account admitted users land in; `xkey_seed` the curve seed (``SX…``) whose
    public key is ``auth_callout.xkey`` (None: requests come in clear)."""

    issuer_seed: SecretStr
    account: str
    xkey_seed: SecretStr | None = None
    #: How long a password login lasts before the server disconnects it (the client reconnects
    #: and is asked again); no login lasts longer than `max_ttl_s`, whatever its token says.
    password_ttl_s: int = 12 * 3600
    max_ttl_s: int = 24 * 3600
    #: Below the authorization timeout the secured configuration gives nats-server (5 s,
    #: ``shared.ops.secured.AUTH_TIMEOUT_S``), so a slow verifier is a refusal with a reason rather
    #: than a silent timeout; long enough for an Argon2id check on a machine under load.
    verify_timeout_s: float = 4.0
    max_in_flight: int = 64
    #: The durable names of every service's consumers (from their wiring tables).
    service_consumers: frozenset[str] = field(default_factory=frozenset)


class CalloutResponder:
    def __init__(
        self, config: CalloutConfig, verifier: Verifier, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self._signer = Signer(config.issuer_seed, Role.ACCOUNT)
        self._curve = CurveKey(config.xkey_seed) if config.xkey_seed is not None else None
        self._verifier = verifier
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None

    @property
    def issuer(self) -> str:
        """The public key to configure as ``auth_callout.issuer``."""
        return self._signer.public_key

    @property
    def xkey(self) -> str | None:
        """The public key to configure as ``auth_callout.xkey``."""
        return self._curve.public_key if self._curve is not None else None

    async def answer(self, data: bytes, server_xkey: str | None) -> bytes:
        """The reply to one request message: sealed when the server sealed its request; empty (the
        server reads it as a refusal) when the request cannot be verified, so has nobody to answer."""
        try:
            token = self._open(data, server_xkey)
            request = jwt.decode_request(token, issuer=self._signer.public_key, now=self._now())
        except (jwt.RequestError, NkeyError) as exc:
            log.warning("auth callout: unverifiable request refused: %s", exc)
            return b""
        if self._curve is not None and request.server_xkey != server_xkey:
            log.warning("auth callout: request refused: its xkey differs from the header's")
            return b""
        response = self._response(request, await self._decide(request), self._now())
        payload = response.encode("ascii")
        if self._curve is not None and server_xkey:
            return self._curve.seal(payload, server_xkey)
        return payload

    def _open(self, data: bytes, server_xkey: str | None) -> str:
        if len(data) > jwt.MAX_REQUEST_CHARS + _XKEY_OVERHEAD:
            raise jwt.RequestError(f"the request is longer than {jwt.MAX_REQUEST_CHARS} bytes")
        if self._curve is not None:
            if not server_xkey:
                raise jwt.RequestError(f"an xkey is configured but the request has no {XKEY_HEADER}")
            data = self._curve.open(data, server_xkey)
        elif server_xkey:
            raise jwt.RequestError("the request is sealed but no xkey is configured")
        if len(data) > jwt.MAX_REQUEST_CHARS:
            raise jwt.RequestError(f"the request is longer than {jwt.MAX_REQUEST_CHARS} bytes")
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise jwt.RequestError("the request is not ASCII text") from None

    async def _decide(self, request: jwt.AuthRequest) -> Decision:
        if request.problem is not None:
            return Refuse(request.problem)
        credentials = request.credentials
        assert credentials is not None  # decode_request sets one of problem and credentials
        if isinstance(credentials, jwt.Password):
            check = self._verifier.password(credentials.user, credentials.password)
        else:
            check = self._verifier.token(credentials.token)
        try:
            decision = await asyncio.wait_for(check, self.config.verify_timeout_s)
        except TimeoutError:
            return Refuse(f"the verifier gave no answer within {self.config.verify_timeout_s:g} s")
        except Exception as exc:  # a verifier's failure is a refusal; its message may hold input
            return Refuse(f"the verifier failed ({type(exc).__name__})")
        if not isinstance(decision, Admit | Refuse):
            return Refuse("the verifier answered neither admit nor refuse")
        return decision

    def _response(self, request: jwt.AuthRequest, decision: Decision, now: int) -> str:
        if isinstance(decision, Admit):
            expires = now + self.config.password_ttl_s if decision.expires is None else decision.expires
            expires = min(expires, now + self.config.max_ttl_s)
            if expires > now:
                log.info("auth callout: admitted %s from %s", decision.owner, _host(request))
                return self._admit(request, decision.owner, now, expires)
            decision = Refuse("the credential has expired")
        log.warning("auth callout: refused %s from %s: %s", _who(request), _host(request), decision.reason)
        return jwt.authorization_response(
            signer=self._signer, request=request, now=now, error=decision.reason
        )

    def _admit(self, request: jwt.AuthRequest, owner: Owner, now: int, expires: int) -> str:
        permissions = user_permissions(owner.token, service_consumers=self.config.service_consumers)
        user = jwt.user_jwt(
            signer=self._signer,
            user_nkey=request.user_nkey,
            account=self.config.account,
            name=str(owner),
            permissions=permissions,
            now=now,
            expires=expires,
        )
        return jwt.authorization_response(signer=self._signer, request=request, now=now, user=user)

    def _now(self) -> int:
        return int(self._clock())

    # -- on the bus ----------------------------------------------------------------------------

    async def start(self, nc: Client) -> None:
        """Answer requests on `nc`, connected as the callout's own user."""
        self._sub = await nc.subscribe(AUTH_SUBJECT, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_request(self, msg: Msg) -> None:
        # nats-py runs one subscription's callbacks one after another: hand each request to a task
        # so a slow verifier delays no other client.
        if len(self._tasks) >= self.config.max_in_flight:
            log.warning("auth callout: %d requests in flight, one refused", len(self._tasks))
            await _respond(msg, b"")
            return
        task = asyncio.create_task(self._reply(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, msg: Msg) -> None:
        try:
            reply = await self.answer(bytes(msg.data), (msg.headers or {}).get(XKEY_HEADER))
        except Exception as exc:  # never die on a request: refuse it and say what went wrong
            log.error("auth callout: request refused after an unexpected %s", type(exc).__name__)
            reply = b""
        await _respond(msg, reply)


async def _respond(msg: Msg, payload: bytes) -> None:
    if msg.reply:
        with contextlib.suppress(Exception):  # the server may have given up on this client
            await msg.respond(payload)


def _who(request: jwt.AuthRequest) -> str:
    """Who asked, for the log: a user name (cut short and quoted), never a password or a token."""
    credentials = request.credentials
    if isinstance(credentials, jwt.Password):
        return f"user {credentials.user[:64]!r}"
    if isinstance(credentials, jwt.Token):
        return "a token"
    return "a client"


def _host(request: jwt.AuthRequest) -> str:
    return request.client_host[:64] or "an unknown host"
