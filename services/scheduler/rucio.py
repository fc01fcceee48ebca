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
  429, 5xx, timeouts, connection errors → retried `attempts` times in all, with full-jitter
            exponential back-off (honouring a small `Retry-After`), then
            "Rucio did not answer the look-up of scope:name after N attempts: <last problem>"
  a body that is not NDJSON objects → "Rucio sent a malformed answer for scope:name: ..."

Successful answers are cached in memory for `cache_s` seconds per (scope, name), on an injectable
monotonic clock. Each HTTP request is an OpenTelemetry CLIENT span (`GET`, HTTP semantic-convention
attributes plus `rucio.did`); a cache hit makes no request and no span.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from services.scheduler.estimates import DataNeed

TRACER_NAME = "execution_broker.scheduler.rucio"
NDJSON = "application/x-json-stream"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0


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
    or call `aclose()`. `timeout` bounds each attempt; a look-up takes at most about
    `attempts x timeout` plus the back-off."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        timeout: float = 5.0,
        *,
        cache_s: float = 300.0,
        attempts: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        max_cache_entries: int = 4096,
        http: httpx.AsyncClient | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.cache_s = cache_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._max_cache_entries = max_cache_entries
        self._cache: OrderedDict[tuple[str, str], tuple[float, ReplicaInfo]] = OrderedDict()
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._tracer = trace.get_tracer(TRACER_NAME, tracer_provider=tracer_provider)
        #: Number of HTTP requests sent (tests and metrics).
        self.requests_sent = 0

    async def __aenter__(self) -> RucioClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

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
        if self.cache_s <= 0:
            return
        self._cache[key] = (self._clock() + self.cache_s, info)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max_cache_entries:
            self._cache.popitem(last=False)

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            try:
                retry_after = float(response.headers.get("Retry-After", ""))
            except ValueError:
                retry_after = -1.0
            if 0 <= retry_after <= MAX_RETRY_AFTER_S:
                return retry_after
        # Full jitter: uniform in [0, min(cap, base x 2^attempt)].
        return self._rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))

    async def replicas(self, scope: str, name: str) -> ReplicaInfo:
        did = f"{scope}:{name}"
        key = (scope, name)
        cached = self._cached(key)
        if cached is not None:
            return cached
        url = f"{self.base_url}/replicas/{quote(scope, safe='')}/{quote(name, safe='/')}"
        headers = {"Accept": NDJSON}
        if self.token:
            headers["X-Rucio-Auth-Token"] = self.token
        last_problem = "no answer"
        for attempt in range(self.attempts):
            response = await self._send(url, headers, did, attempt)
            if isinstance(response, str):
                last_problem = response
            elif response.status_code == 200:
                info = parse_replicas(did, response.text)
                self._remember(key, info)
                return info
            elif response.status_code in (401, 403):
                raise RucioLookupFailed(
                    f"Rucio refused the look-up of {did}: {_rucio_error(response)}",
                    status=response.status_code,
                )
            elif response.status_code == 404:
                raise RucioLookupFailed(f"Rucio has no replica of {did}", status=404)
            elif response.status_code not in RETRYABLE_STATUS:
                raise RucioLookupFailed(
                    f"Rucio rejected the look-up of {did}: {_rucio_error(response)}",
                    status=response.status_code,
                )
            else:
                last_problem = _rucio_error(response)
            if attempt + 1 < self.attempts:
                await self._sleep(self._delay(attempt, None if isinstance(response, str) else response))
        raise RucioLookupFailed(
            f"Rucio did not answer the look-up of {did} after {self.attempts} "
            f"attempt{'s' if self.attempts != 1 else ''}: {last_problem}"
        )

    async def _send(self, url: str, headers: dict[str, str], did: str, attempt: int) -> httpx.Response | str:
        """One GET in a CLIENT span; returns the response, or a description of a transport failure."""
        attributes: dict[str, Any] = {
            "http.request.method": "GET",
            "url.full": url,
            "server.address": httpx.URL(url).host,
            "rucio.did": did,
        }
        if attempt:
            attributes["http.request.resend_count"] = attempt
        with self._tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as span:
            self.requests_sent += 1
            try:
                response = await self._http.get(url, headers=headers, timeout=self.timeout)
            except httpx.TimeoutException:
                span.set_attribute("error.type", "timeout")
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                return f"no answer within {self.timeout:g} s"
            except httpx.TransportError as exc:
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                return f"cannot reach {self.base_url} ({detail})"
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_attribute("error.type", str(response.status_code))
                span.set_status(Status(StatusCode.ERROR))
            return response


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
                problems.append(answer.message)
                reported.add(key)
            resolved.append(need)
            continue
        if not answer.rses:
            if key not in reported:
                problems.append(f"Rucio has no available replica of {need.did}")
                reported.add(key)
            resolved.append(need)
            continue
        # An incomplete copy (no RSE holds every file) is not an error: `rses` is then the union,
        # and the estimate is the optimistic one of the best RSE.
        size = need.size_bytes if need.size_bytes is not None else answer.bytes
        resolved.append(replace(need, replicas=answer.rses, size_bytes=size))
    return resolved, problems
