"""The one retry loop of every HTTP call to a platform or to Rucio, on `stamina`.

An attempt raises `Retry` for a failure worth another attempt; anything else it raises ends the call
at once. stamina waits between attempts with exponential back-off and jitter: the wait before retry
n (1-based) is min(max_backoff_s, backoff_s * 2^(n-1) + uniform(0, jitter_s)). This module decides,
once per failure, whether there is another attempt:

* not after `attempts` attempts in all (the first included);
* not when the wait would end past `budget_s` after the call began (a wait never starts that the
  budget cannot pay for, so a call lasts at most budget_s plus one request timeout);
* a server's `Retry-After` (delta-seconds or an HTTP date) replaces the back-off; one longer than
  `max_retry_after_s`, or than what is left of the budget, ends the call at once with a message that
  says so.

When it ends, the call raises `GaveUp` with the last reason, the attempts made and why it stopped.
Worst case with the platforms' defaults (5 attempts, 30 s per request, 120 s budget): 5 requests and
150 s for one call (the driver adds none: it does not retry platform calls).
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

import stamina

log = logging.getLogger(__name__)

T = TypeVar("T")
Stop = Literal["attempts", "budget", "retry_after"]


class HttpLayerError(Exception):
    """A failure of the HTTP layer; `message` never holds a secret."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class Retry(HttpLayerError):
    """Raised by an attempt: it failed in a way that another attempt may not.

    `retry_after` is what the server asked for (checked against the limits); `pause` is a wait the
    caller chose itself (e.g. 0 to resend at once with a re-read token), checked against the budget.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, pause: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.pause = pause


class GaveUp(HttpLayerError):
    """No attempt succeeded: `reason` is the last failure, `stopped` says which limit ended the call,
    `limit` is that limit in seconds (the budget, or the longest wait allowed for a Retry-After)."""

    def __init__(self, what: str, last: Retry, attempts: int, stopped: Stop, limit: float) -> None:
        self.what = what
        self.reason = last.reason
        self.attempts = attempts
        self.stopped = stopped
        self.retry_after = last.retry_after
        self.limit = limit
        super().__init__(f"{what}: {last.reason} ({self.summary})")

    @property
    def summary(self) -> str:
        """Why the call ended, e.g. 'gave up after 5 attempts'."""
        tries = f"{self.attempts} attempt{'s' if self.attempts != 1 else ''}"
        if self.stopped == "retry_after":
            return (
                f"asked to retry after {self.retry_after:g} s, longer than the {self.limit:g} s it may wait"
            )
        if self.stopped == "budget":
            return f"gave up after {tries}: its time budget of {self.limit:g} s is spent"
        return f"gave up after {tries}"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # in all, the first included
    backoff_s: float = 0.5  # the first wait, before jitter
    max_backoff_s: float = 30.0
    budget_s: float = 120.0  # the whole call, waits included
    max_retry_after_s: float = 120.0
    jitter_s: float | None = None  # None: as much as backoff_s

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, not {self.attempts}")
        for name in ("backoff_s", "max_backoff_s", "budget_s", "max_retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def jitter(self) -> float:
        return self.backoff_s if self.jitter_s is None else self.jitter_s

    def longest_backoff(self, retry: int) -> float:
        """The longest wait stamina may choose before retry number `retry` (1-based)."""
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** (retry - 1) + self.jitter)

    def decide(self, attempts_made: int, elapsed: float, failure: Retry) -> bool | float | tuple[Stop, float]:
        """After a failed attempt: True (stamina's back-off), a wait in seconds, or (the limit that ends
        the call, its value in seconds)."""
        if attempts_made >= self.attempts:
            return ("attempts", float(self.attempts))
        if failure.retry_after is not None:
            longest = max(0.0, min(self.max_retry_after_s, self.budget_s - elapsed))
            if failure.retry_after > longest:
                return ("retry_after", longest)
            return failure.retry_after
        wait = failure.pause if failure.pause is not None else self.longest_backoff(attempts_made)
        if elapsed + wait > self.budget_s:
            return ("budget", self.budget_s)
        return True if failure.pause is None else failure.pause


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3), or None."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass
class CallState:
    """What one call's attempts share: how many came before, and whether the token was re-read."""

    resend: int = 0
    reauthenticated: bool = False


async def retrying(
    policy: RetryPolicy,
    attempt: Callable[[CallState], Awaitable[T]],
    what: str,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run `attempt` until it returns, raises something other than `Retry`, or the policy stops it."""
    state = CallState()
    began = clock()
    stopped: list[tuple[Retry, Stop, float]] = []

    def on_failure(error: Exception) -> bool | float:
        if not isinstance(error, Retry):
            return False
        decision = policy.decide(state.resend + 1, clock() - began, error)
        if isinstance(decision, tuple):
            stopped.append((error, *decision))
            return False
        state.resend += 1
        log.info("%s: %s; try %d of %d", what, error.reason, state.resend + 1, policy.attempts)
        return decision

    try:
        async for try_ in stamina.retry_context(
            on=on_failure,
            attempts=policy.attempts,
            timeout=None,  # the budget is kept by on_failure, which knows the next wait
            wait_initial=policy.backoff_s,
            wait_max=policy.max_backoff_s,
            wait_jitter=policy.jitter,
        ):
            with try_:
                return await attempt(state)
    except Retry as error:
        # Without an entry, stamina itself stopped (retries switched off with stamina.set_active).
        last, why, limit = stopped[-1] if stopped else (error, "attempts", float(state.resend + 1))
        raise GaveUp(what, last, state.resend + 1, why, limit) from None
    raise AssertionError("unreachable: stamina re-raises the last failure")
