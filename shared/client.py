"""The Python client: submit a request, update a session, follow its events — all over NATS.

It talks only to the bus (no HTTP), and fails with ``BrokerUnavailable`` — a clear message, not a
traceback — when no NATS server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats
import yaml
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NoStreamResponseError

from shared import subjects
from shared.auth.credentials import Credentials
from shared.bus.publishing import ELECTION_DEADLINE_S, publish_once
from shared.bus.servers import server_urls, unreported
from shared.lifecycle import Phase, is_terminal
from shared.messages import SessionEvent, UpdateResult
from shared.models import (
    ENUM_VALUE_UPDATE_KIND,
    MAX_DOCUMENT_BYTES,
    ExecutionRequest,
    OfferSetResponse,
    dump_json,
)

#: How often a reconnecting client retries a lost server: five times slower than the auth callout
#: (`shared.ops.callout.CALLOUT_RECONNECT_WAIT_S`), so that after a server restart the callout is
#: usually subscribed again first (a login it misses is refused, and nats-py then gives up).
RECONNECT_WAIT_S = 0.5
#: How long one new login of a long-running client may take (`BrokerClient._live`).
RELOGIN_ATTEMPT_S = 5.0
#: How long a follower of events keeps trying to log in again before it gives up.
RELOGIN_DEADLINE_S = 120.0


class BrokerUnavailable(RuntimeError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"no broker answers at {url} ({reason}). Start one with 'broker up', or point to a running "
            "one with --nats-url or EB_NATS_URL."
        )
        self.url = url


#: How long an update waits for its decision by default: a cancel waits for the session's end.
UPDATE_TIMEOUT_S = 30.0


class BrokerTimeout(TimeoutError):
    pass


def update_timeout_message(session_id: str, phase: str, timeout: float) -> str:
    """What an update that got no decision in time says (the client's error, HTTP's 504)."""
    return (
        f"no decision on the update of session {session_id} to {phase} within {timeout:g} s: the "
        "broker's services did not answer in time. The update may still be applied: read the session "
        "again before retrying"
    )


class RequestTooLarge(ValueError):
    """The bus refuses payloads over the server's max_payload (1 MiB by default): say so up front."""


def read_request_file(path: Path) -> dict[str, Any]:
    """Load a request document; a relative notebook location is resolved against the file's folder."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise ValueError(f"{path} does not hold a request document (a mapping)")
    executable = document.get("executable")
    if isinstance(executable, dict):
        location = executable.get("location")
        if isinstance(location, str) and location and "://" not in location and not location.startswith("/"):
            executable["location"] = str((path.parent / location).resolve())
    return document


class BrokerRefused(PermissionError):
    def __init__(self, url: str, who: str, reason: str) -> None:
        super().__init__(
            f"the broker at {url} refused {who} ({reason}): check the user name and password, that the "
            "identity is enabled and that a token has not expired"
        )
        self.url = url


class BrokerClient:
    """One user's connection to the broker: it publishes and reads only its owner's subjects.

    The owner is the one the server gives `credentials` (`Credentials.owner`), so the client's
    subjects and its private reply inbox match what the server lets that user do.
    """

    def __init__(
        self,
        nats_url: str,
        credentials: Credentials,
        *,
        connect_timeout: float = 3.0,
        reconnect: bool = False,
        resend_after: float = 10.0,
    ) -> None:
        self.nats_url = nats_url
        self.credentials = credentials
        self.owner = credentials.owner.token
        self.connect_timeout = connect_timeout
        # Interactive commands fail fast; long-running clients (the fault harness) ride out restarts.
        self.reconnect = reconnect
        self.resend_after = resend_after
        self._nc: Client | None = None
        self._login_lock = asyncio.Lock()

    async def connect(self) -> None:
        try:
            nc = Client()
            await self._log_in(nc)
            self._nc = nc
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            if "authorization" in reason.lower() or "authentication" in reason.lower():
                reason = reason.removeprefix("nats: ").strip("'")
                raise BrokerRefused(self.nats_url, self.credentials.describe(), reason) from None
            raise BrokerUnavailable(self.nats_url, reason) from None

    async def _log_in(self, nc: Client) -> None:
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout,
            "max_reconnect_attempts": -1 if self.reconnect else 1,
            "allow_reconnect": self.reconnect,
            "reconnect_time_wait": RECONNECT_WAIT_S,
            "error_cb": unreported,
            "name": "eb-client",
        }
        await nc.connect(server_urls(self.nats_url), **options, **self.credentials.connect_options())

    async def _live(self, deadline: float) -> Client:
        """The connection; for a long-running client, a new one if nats-py gave the old one up.

        nats-py closes a connection for good when the server refuses a reconnect's login, which
        happens when a client is back before the auth callout after a server restart. A
        long-running client then logs in again until ``deadline``. nats-py's own connect never
        returns while a reconnecting client's login is refused, so each try is bounded.
        """
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        if not self.reconnect:
            raise BrokerUnavailable(self.nats_url, "the connection to NATS was closed")
        loop = asyncio.get_running_loop()
        async with self._login_lock:  # the concurrent callers share one new connection
            while self._nc is None or self._nc.is_closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise BrokerTimeout(f"could not log in again at {self.nats_url} before the deadline")
                nc = Client()
                try:
                    await asyncio.wait_for(self._log_in(nc), timeout=min(remaining, RELOGIN_ATTEMPT_S))
                except (TimeoutError, OSError, nats.errors.Error):
                    with contextlib.suppress(Exception):
                        await nc.close()
                    continue
                self._nc = nc
        return self.nc

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise RuntimeError("client is not connected")
        return self._nc

    async def _publish_and_wait(
        self, subject: str, payload: bytes, msg_id: str, answer_subject: str, timeout: float
    ) -> bytes:
        """Publish, then wait for the answer; re-publish with the same id until ``timeout``.

        Re-publishing is safe: the stream drops a copy with the same ``Nats-Msg-Id`` and the service's
        inbox ignores one it has processed, so a request lost to a crash is simply sent again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sub: Subscription | None = None
        sub_nc: Client | None = None  # the connection `sub` lives on
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise BrokerTimeout(f"no answer on {answer_subject} within {timeout:.0f} s")
                nc = await self._live(deadline)
                try:
                    if sub is None or sub_nc is not nc:
                        # Subscribe before publishing so the answer cannot slip past; fall back to
                        # the stream's copy.
                        sub, sub_nc = await nc.subscribe(answer_subject, max_msgs=1), nc
                    # Through a leader election (`shared.bus.publishing`); an interactive client gives
                    # up on no responders after one election's time: no broker is set up there.
                    await publish_once(
                        nc.jetstream(),
                        subject,
                        payload,
                        msg_id,
                        attempt_timeout_s=min(5.0, remaining),
                        deadline_s=remaining if self.reconnect else min(remaining, ELECTION_DEADLINE_S),
                    )
                except (nats.errors.NoRespondersError, NoStreamResponseError):
                    if not self.reconnect:  # nothing stores the subject: no broker set up here
                        raise BrokerUnavailable(
                            self.nats_url, "NATS answers but the broker's streams do not exist"
                        ) from None
                    await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
                    continue
                except Exception:  # the server may be restarting: try again until the deadline
                    await asyncio.sleep(min(0.5, max(0.0, deadline - loop.time())))
                    continue
                try:
                    msg: Msg = await sub.next_msg(timeout=min(self.resend_after, max(0.1, remaining)))
                    return bytes(msg.data)
                except nats.errors.TimeoutError:
                    pass
                except nats.errors.ConnectionClosedError:
                    continue
                stored = await self._last_stored(answer_subject)
                if stored is not None:
                    return stored
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _last_stored(self, subject: str) -> bytes | None:
        """The stream's copy of an answer whose live delivery was missed, or None.

        Read through a consumer filtered on that one subject: a user may not get stream messages
        directly (``STREAM.MSG.GET`` takes its filter in the body, where the server cannot check it).
        """
        try:
            sub = await self._ordered(subject, DeliverPolicy.LAST_PER_SUBJECT)
        except Exception:
            return None
        try:
            msg = await sub.next_msg(timeout=1.0)
            return bytes(msg.data)
        except Exception:
            return None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _ordered(
        self, subject: str, policy: DeliverPolicy, *, after: int = 0
    ) -> JetStreamContext.PushSubscription:
        """An ordered consumer on the events stream, filtered on `subject`, that a user may create.

        The server checks the filter only in the ``CONSUMER.CREATE.<stream>.<name>.<filter>`` form,
        which nats-py uses when the consumer has a name; ``stream=`` spares the lookup of the stream
        by subject (``STREAM.NAMES``, not a user's). nats-py re-creates an ordered consumer under its
        old name when it restarts it (after a gap or a server restart), which the server refuses for
        a consumer that still exists: each restart gets a fresh name.
        """
        sub = await self.nc.jetstream().subscribe(
            subject,
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else policy,
            config=ConsumerConfig(name=_consumer_name(), opt_start_seq=after + 1 if after else None),
        )
        _rename_on_reset(sub)
        return sub

    async def submit(
        self,
        document: ExecutionRequest | Mapping[str, Any] | bytes | str,
        *,
        request_id: str | None = None,
        timeout: float = 30.0,
    ) -> OfferSetResponse:
        request_id = request_id or str(uuid.uuid4())
        if isinstance(document, ExecutionRequest):
            payload = dump_json(document)
        elif isinstance(document, Mapping):
            payload = json.dumps(document, default=str).encode()
        elif isinstance(document, str):
            payload = document.encode()
        else:
            payload = document
        limit = min(self.nc.max_payload, MAX_DOCUMENT_BYTES)
        if len(payload) > limit:
            raise RequestTooLarge(
                f"the request is {len(payload):,} bytes; the broker accepts at most {limit:,} bytes"
            )
        raw = await self._publish_and_wait(
            subjects.request(self.owner, request_id),
            payload,
            request_id,
            subjects.offerset(self.owner, request_id),
            timeout,
        )
        return OfferSetResponse.model_validate_json(raw)

    async def update(
        self, session_id: str, phase: str | Phase, *, timeout: float = UPDATE_TIMEOUT_S
    ) -> UpdateResult:
        """Ask for a phase change; the answer comes once the offers service has decided it.

        The result carries the session's phase after the update (``ACCEPTED``, ``REJECTED``,
        ``CANCELLED`` …), or ``applied=False`` with messages that say why and what is legal now. A
        cancel of an accepted session is answered when the session has ended (the launcher stops
        what runs first), so its phase is ``CANCELLED`` — or how the session ended if it ended
        first. Raises ``BrokerTimeout`` when no decision comes within ``timeout``.
        """
        update_id = str(uuid.uuid4())
        body = json.dumps({"kind": ENUM_VALUE_UPDATE_KIND, "path": "phase", "value": str(phase)}).encode()
        try:
            raw = await self._publish_and_wait(
                subjects.update(self.owner, session_id),
                body,
                update_id,
                subjects.update_result(self.owner, session_id, update_id),
                timeout,
            )
        except BrokerTimeout:
            raise BrokerTimeout(update_timeout_message(session_id, str(phase), timeout)) from None
        return UpdateResult.model_validate_json(raw)

    async def accept(self, session_id: str, *, timeout: float = UPDATE_TIMEOUT_S) -> UpdateResult:
        return await self.update(session_id, Phase.ACCEPTED, timeout=timeout)

    async def reject(self, session_id: str, *, timeout: float = UPDATE_TIMEOUT_S) -> UpdateResult:
        return await self.update(session_id, Phase.REJECTED, timeout=timeout)

    async def cancel(self, session_id: str, *, timeout: float = UPDATE_TIMEOUT_S) -> UpdateResult:
        """Answered once the session has ended: CANCELLED (or how it ended, if it ended first)."""
        return await self.update(session_id, Phase.CANCELLED, timeout=timeout)

    async def events(
        self,
        session_id: str | None = None,
        *,
        until_done: bool = False,
        replay: bool = True,
        idle_timeout: float | None = None,
    ) -> AsyncIterator[SessionEvent]:
        """This owner's session events in stream order; with a session id, its whole history first."""
        subject = subjects.session_events(self.owner, session_id or "*")
        policy = DeliverPolicy.ALL if replay else DeliverPolicy.NEW
        sub = await self._ordered(subject, policy)
        after = 0  # the stream sequence of the last event read
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=idle_timeout if idle_timeout is not None else 3600.0)
                except nats.errors.TimeoutError:
                    if idle_timeout is not None:
                        raise BrokerTimeout(f"no session event within {idle_timeout:.0f} s") from None
                    continue
                except nats.errors.ConnectionClosedError:
                    if not self.reconnect:
                        raise
                    # Logged in again (`_live`): carry on after the last event read.
                    await self._live(asyncio.get_running_loop().time() + RELOGIN_DEADLINE_S)
                    sub = await self._ordered(subject, policy, after=after)
                    continue
                with contextlib.suppress(Exception):
                    after = msg.metadata.sequence.stream
                try:
                    event = SessionEvent.model_validate_json(msg.data)
                except ValueError:
                    # Only the owning services publish phases, but a stored reply is not checked
                    # against permissions (docs/security.md): skip what is not an event.
                    continue
                yield event
                if until_done and session_id is not None and is_terminal(Phase(event.phase)):
                    return
        finally:
            # The connection may already be closed when an abandoned iterator is cleaned up.
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def wait_until_done(self, session_id: str, timeout: float) -> list[SessionEvent]:
        seen: list[SessionEvent] = []

        async def follow() -> None:
            async for event in self.events(session_id, until_done=True):
                seen.append(event)

        await asyncio.wait_for(follow(), timeout)
        return seen


def _consumer_name() -> str:
    return f"eb-client-{uuid.uuid4().hex}"


def _rename_on_reset(sub: JetStreamContext.PushSubscription) -> None:
    """Give nats-py's ordered-consumer restart a fresh consumer name (see `BrokerClient._ordered`).

    This reaches into nats-py's subscription state (pinned below 3): without it, a follower's
    restart is refused and it goes quiet. If the internals change, the follower still works until
    its first restart, and tests/faults/test_follow_restart.py says so.
    """
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)  # on the core subscription inside
    reset = getattr(jsi, "reset_ordered_consumer", None)
    if jsi is None or reset is None or not hasattr(jsi, "_ccreq"):
        return

    async def reset_renamed(sseq: int | None) -> bool:
        jsi._ccreq.name = _consumer_name()
        return bool(await reset(sseq))

    jsi.reset_ordered_consumer = reset_renamed


async def wait_for_services(
    nats_url: str, services: tuple[str, ...], timeout: float, credentials: Credentials
) -> None:
    """Wait until every service answers its health subject (they declare streams before that)."""
    deadline = asyncio.get_running_loop().time() + timeout
    pending = list(services)
    last_error = "not started"
    while pending:
        try:
            nc = await nats.connect(
                server_urls(nats_url),
                connect_timeout=1,
                allow_reconnect=False,
                error_cb=unreported,
                **credentials.connect_options(),
            )
        except Exception as exc:
            last_error = str(exc) or type(exc).__name__
        else:
            try:
                for name in list(pending):
                    try:
                        await nc.request(subjects.health(name), b"", timeout=0.5)
                        pending.remove(name)
                    except Exception as exc:
                        last_error = f"{name}: {exc or type(exc).__name__}"
            finally:
                await nc.close()
        if pending:
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerUnavailable(nats_url, f"services not ready: {', '.join(pending)} ({last_error})")
            await asyncio.sleep(0.2)
