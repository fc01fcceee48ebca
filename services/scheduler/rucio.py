"""A small Rucio client for replica look-ups (launcher-targets.md §4.1), and `resolve_needs`.

`RucioClient.replicas(scope, name)` calls `GET /replicas/{scope}/{name}` with `X-Rucio-Auth-Token`
and `Accept: application/x-json-stream`, and parses the NDJSON answer (one object per file; a dataset
or container expands to its files). Only AVAILABLE replicas count: Rucio itself lists only those, and
when an object carries `states` (`{"RSE": "AVAILABLE" | "COPYING" | ...}`) the others are dropped.

For a DID with several files, `rses` are the RSEs that hold **every** file (a complete copy), in the
order Rucio listed them, and `bytes` is the sum (None when a file has no size). When no RSE holds a
complete copy, `rses` is the union and `complete` is False.

Failures raise `RucioLookupFailed` with a message a user can act on:
  401/403 → "Rucio refused the look-up of scope:name: <ExceptionMessage>"   (no retry)
  404     → "Rucio has no replica of scope:name"                              (no retry)
  400/406 → "Rucio rejected the look-up of scope:name: ..."                   (no retry)
  429, 5xx, timeouts, connection errors → retried by the shared HTTP layer (`attempts` in all,
            jittered exponential back-off, `Retry-After`, a time budget), then
            "Rucio did not answer the look-up of scope:name after N attempts: <last problem>"
  a body that is not NDJSON objects → "Rucio sent a malformed answer for scope:name: ..."

The token is `EB_RUCIO_TOKEN` or `EB_RUCIO_TOKEN_FILE` (re-read when the file changes, and at once
on a 401); without one, an account's user name and password obtain tokens from Rucio's own
`/auth/userpass`, renewed before they end (`services.scheduler.rucio_auth`).

Successful answers are cached in memory for `cache_s` seconds per (scope, name), on an injectable
monotonic clock. Settings: `RucioSettings` (`EB_RUCIO_*`). Each HTTP request is an OpenTelemetry
CLIENT span (`GET`, HTTP semantic-convention attributes plus `rucio.did`); a cache hit makes no
request and no span.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Protocol
from urllib.parse import quote

import httpx
from opentelemetry.trace import TracerProvider
from pydantic import SecretStr

from services.scheduler.estimates import DataNeed
from services.scheduler.rucio_auth import RucioAuthTokens
from services.scheduler.rucio_settings import RucioSettings
from shared.http.client import HttpApi
from shared.http.retry import GaveUp, HttpLayerError
from shared.http.rules import RetryRules
from shared.http.tokens import TokenSource
from shared.models.data_products import shown_ivoid

TRACER_NAME = "execution_broker.scheduler.rucio"
NDJSON = "application/x-json-stream"


class RucioLookupFailed(Exception):
    """A replica look-up failed; `message` is meant for the user (it ends up in a NO offer set)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ReplicaInfo:
    bytes: int | None
    rses: tuple[str, ...]
    files: int = 1
    #: False when no single RSE holds every file (then `rses` is the union).
    complete: bool = True


class ReplicaSource(Protocol):
    """What `resolve_needs` needs: `RucioClient`, or a stand-in in unit tests."""

    async def replicas(self, scope: str, name: str) -> ReplicaInfo: ...


def _rucio_error(response: httpx.Response) -> str:
    """The `ExceptionMessage` of a Rucio error (body or header), else a short body, else the reason."""
    message = response.headers.get("ExceptionMessage")
    if not message:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("ExceptionMessage"), str):
            message = body["ExceptionMessage"]
        else:
            message = response.text.strip()[:200] or response.reason_phrase
    return f"{message} (HTTP {response.status_code})"


@dataclass(frozen=True)
class RucioRules(RetryRules):
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})

    def status_reason(self, response: httpx.Response) -> str:
        return _rucio_error(response)


def parse_replicas(did: str, text: str) -> ReplicaInfo:
    """Parse Rucio's NDJSON replica listing; raise `RucioLookupFailed` when it is malformed."""
    files: list[tuple[int | None, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise RucioLookupFailed(
                f"Rucio sent a malformed answer for {did}: line {number} is not JSON"
            ) from None
        if not isinstance(item, dict):
            raise RucioLookupFailed(f"Rucio sent a malformed answer for {did}: line {number} is no object")
        rses = item.get("rses") or {}
        states = item.get("states")
        size = item.get("bytes")
        if not isinstance(rses, dict) or (states is not None and not isinstance(states, dict)):
            raise RucioLookupFailed(
                f"Rucio sent a malformed answer for {did}: line {number} has no valid 'rses' mapping"
            )
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise RucioLookupFailed(f"Rucio sent a malformed answer for {did}: line {number}: bad 'bytes'")
        available = [
            str(rse)
            for rse, pfns in rses.items()
            if pfns is not None and (states is None or states.get(rse, "AVAILABLE") == "AVAILABLE")
        ]
        files.append((size, available))
    if not files:
        return ReplicaInfo(bytes=None, rses=(), files=0, complete=False)
    sizes = [size for size, _ in files]
    total = None if any(size is None for size in sizes) else sum(s for s in sizes if s is not None)
    union: list[str] = []
    for _, rses_of_file in files:
        union.extend(rse for rse in rses_of_file if rse not in union)
    complete = [rse for rse in union if all(rse in rses_of_file for _, rses_of_file in files)]
    if complete or not union:
        return ReplicaInfo(bytes=total, rses=tuple(complete), files=len(files), complete=bool(complete))
    return ReplicaInfo(bytes=total, rses=tuple(union), files=len(files), complete=False)


class RucioClient:
    """Replica look-ups against one Rucio server. Use as `async with RucioClient(...) as rucio:`,
    or call `aclose()`. Keyword arguments left out (or None) come from `RucioSettings`."""

    def __init__(
        self,
        base_url: str,
        token: str | SecretStr | None,
        timeout: float | None = None,
        *,
        cache_s: float | None = None,
        attempts: int | None = None,
        backoff_s: float | None = None,
        max_backoff_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        max_cache_entries: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        tracer_provider: TracerProvider | None = None,
        **credentials: object,
    ) -> None:
        """`credentials`: `account`, `username`, `password` (or `password_file`) and `renew_before_s`
        of `RucioSettings`, for tokens from Rucio's auth endpoint when no token is given."""
        self.settings = RucioSettings.from_keywords(
            {
                "token": SecretStr(token) if isinstance(token, str) else token,
                "timeout_s": timeout,
                "cache_s": cache_s,
                "attempts": attempts,
                "backoff_s": backoff_s,
                "max_backoff_s": max_backoff_s,
                "max_cache_entries": max_cache_entries,
                **credentials,
            }
        )
        self.base_url = base_url.rstrip("/")
        tokens: TokenSource = TokenSource(
            self.settings.token, label="Rucio token", variable=self.settings.variable("token")
        )
        if not tokens.configured and self.settings.username and self.settings.password is not None:
            # No token given: Rucio's own auth endpoint gives them, renewed before they end.
            tokens = RucioAuthTokens(
                self.settings,
                self.base_url,
                wall_clock=wall_clock,
                transport=transport,
                tracer_provider=tracer_provider,
            )
        self._tokens = tokens
        self._http = HttpApi.for_settings(
            self.settings,
            self.base_url,
            rules=RucioRules(),
            tracer_name=TRACER_NAME,
            # Without a token the look-up goes out anonymous, and Rucio says what it thinks of that.
            tokens=tokens if tokens.configured else None,
            auth=lambda value: {"X-Rucio-Auth-Token": value},
            headers={"Accept": NDJSON},
            tracer_provider=tracer_provider,
            transport=transport,
        )
        self._clock = clock
        self._cache: OrderedDict[tuple[str, str], tuple[float, ReplicaInfo]] = OrderedDict()

    async def __aenter__(self) -> RucioClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        if isinstance(self._tokens, RucioAuthTokens):
            await self._tokens.aclose()

    def clear_cache(self) -> None:
        self._cache.clear()

    def _cached(self, key: tuple[str, str]) -> ReplicaInfo | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, info = entry
        if self._clock() >= expires:
            del self._cache[key]
            return None
        return info

    def _remember(self, key: tuple[str, str], info: ReplicaInfo) -> None:
        if self.settings.cache_s <= 0:
            return
        self._cache[key] = (self._clock() + self.settings.cache_s, info)
        self._cache.move_to_end(key)
        while len(self._cache) > self.settings.max_cache_entries:
            self._cache.popitem(last=False)

    async def replicas(self, scope: str, name: str) -> ReplicaInfo:
        did = f"{scope}:{name}"
        key = (scope, name)
        cached = self._cached(key)
        if cached is not None:
            return cached
        path = f"/replicas/{quote(scope, safe='')}/{quote(name, safe='/')}"
        try:
            response = await self._http.call("GET", path, attributes={"rucio.did": did})
        except GaveUp as gave_up:
            if gave_up.stopped == "attempts":
                raise RucioLookupFailed(
                    f"Rucio did not answer the look-up of {did} after {gave_up.attempts} "
                    f"attempt{'s' if gave_up.attempts != 1 else ''}: {gave_up.reason}"
                ) from None
            raise RucioLookupFailed(
                f"Rucio did not answer the look-up of {did}: {gave_up.reason} ({gave_up.summary})"
            ) from None
        except HttpLayerError as error:
            raise RucioLookupFailed(f"Rucio cannot be asked about {did}: {error.message}") from None
        if response.status_code == 200:
            info = parse_replicas(did, response.text)
            self._remember(key, info)
            return info
        if response.status_code in (401, 403):
            raise RucioLookupFailed(
                f"Rucio refused the look-up of {did}: {_rucio_error(response)}", status=response.status_code
            )
        if response.status_code == 404:
            raise RucioLookupFailed(f"Rucio has no replica of {did}", status=404)
        raise RucioLookupFailed(
            f"Rucio rejected the look-up of {did}: {_rucio_error(response)}", status=response.status_code
        )


def _named_by(need: DataNeed) -> str:
    """Which request identifier named the DID, when it was not given as scope and name."""
    return f" (the data product {shown_ivoid(need.origin)} of {need.name})" if need.origin else ""


async def resolve_needs(needs: Sequence[DataNeed], client: ReplicaSource) -> tuple[list[DataNeed], list[str]]:
    """Fill in the replicas (and the size, when the request gave none) of DIDs that have no replicas.

    Returns the needs in the same order, and the problems as human reasons (the scheduler turns them
    into a NO with a specific message). A need that could not be resolved is returned unchanged.
    Look-ups run concurrently; each distinct DID is looked up once.
    """
    wanted: dict[tuple[str, str], None] = {}
    problems: list[str] = []
    for need in needs:
        if need.replicas:
            continue
        if need.scope and need.object_name:
            wanted[(need.scope, need.object_name)] = None
        elif not need.remote_http:
            problems.append(
                f"The data item {need.name} names no Rucio scope and object, so it cannot be located"
            )

    async def look_up(scope: str, name: str) -> ReplicaInfo | RucioLookupFailed:
        try:
            return await client.replicas(scope, name)
        except RucioLookupFailed as exc:
            return exc

    keys = list(wanted)
    answers = dict(zip(keys, await asyncio.gather(*(look_up(*key) for key in keys)), strict=True))
    resolved: list[DataNeed] = []
    reported: set[tuple[str, str]] = set()
    for need in needs:
        key = (need.scope or "", need.object_name or "")
        answer = answers.get(key) if not need.replicas else None
        if answer is None:
            resolved.append(need)
            continue
        if isinstance(answer, RucioLookupFailed):
            if key not in reported:
                problems.append(answer.message + _named_by(need))
                reported.add(key)
            resolved.append(need)
            continue
        if not answer.rses:
            if key not in reported:
                problems.append(f"Rucio has no available replica of {need.did}{_named_by(need)}")
                reported.add(key)
            resolved.append(need)
            continue
        # An incomplete copy (no RSE holds every file) is not an error: `rses` is then the union,
        # and the estimate is the optimistic one of the best RSE.
        size = need.size_bytes if need.size_bytes is not None else answer.bytes
        resolved.append(replace(need, replicas=answer.rses, size_bytes=size))
    return resolved, problems
