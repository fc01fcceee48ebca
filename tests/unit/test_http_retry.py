"""The shared retry loop: back-off bounds, the time budget, Retry-After in both forms, the one loop
of a create that must not be made twice, and the rules as `HttpApi` applies them (over an in-memory
transport, no network)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks

from shared.http.client import HttpApi, InDoubt
from shared.http.create import create_without_duplicates
from shared.http.retry import CallState, GaveUp, Retry, RetryPolicy, retry_after_seconds, retrying
from shared.http.rules import RetryRules
from shared.http.tokens import TokenSource
from shared.secret_settings import FileSecret

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def waits() -> Iterator[list[float]]:
    """The waits stamina chose, in order (its own instrumentation, not our arithmetic)."""
    chosen: list[float] = []
    previous = get_on_retry_hooks()

    def record(details: RetryDetails) -> None:
        chosen.append(details.wait_for)

    set_on_retry_hooks([record])
    yield chosen
    set_on_retry_hooks(previous)


def failing(times: int, failure: Retry) -> tuple[list[int], Callable[[CallState], Awaitable[str]]]:
    """An attempt that fails `times` times with `failure`, then returns "done"; and its calls."""
    calls: list[int] = []

    async def attempt(state: CallState) -> str:
        calls.append(state.resend)
        if len(calls) <= times:
            raise failure
        return "done"

    return calls, attempt


# -- the policy's decisions (pure) ----------------------------------------------------------------


def test_the_attempt_limit_counts_the_first_attempt() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.decide(2, 0.0, Retry("x")) is True
    assert policy.decide(3, 0.0, Retry("x")) == ("attempts", 3.0)


def test_no_wait_starts_that_the_budget_cannot_pay_for() -> None:
    policy = RetryPolicy(backoff_s=0.5, max_backoff_s=30, budget_s=10.0)
    assert policy.longest_backoff(3) == 0.5 * 4 + 0.5
    assert policy.decide(3, 7.5, Retry("x")) is True  # 7.5 + 2.5 = 10
    assert policy.decide(3, 7.6, Retry("x")) == ("budget", 10.0)
    # A pause the caller chose is checked the same way.
    assert policy.decide(1, 9.5, Retry("x", pause=0.0)) == 0.0
    assert policy.decide(1, 9.5, Retry("x", pause=1.0)) == ("budget", 10.0)


def test_retry_after_replaces_the_back_off_within_its_limits() -> None:
    policy = RetryPolicy(max_retry_after_s=60.0, budget_s=100.0)
    assert policy.decide(1, 0.0, Retry("x", retry_after=30.0)) == 30.0
    assert policy.decide(1, 0.0, Retry("x", retry_after=0.0)) == 0.0
    # Longer than the cap, or than what is left of the budget: the call ends at once.
    assert policy.decide(1, 0.0, Retry("x", retry_after=61.0)) == ("retry_after", 60.0)
    assert policy.decide(1, 80.0, Retry("x", retry_after=30.0)) == ("retry_after", 20.0)


def test_retry_after_in_both_forms() -> None:
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(" 1.5 ") == 1.5
    assert retry_after_seconds("Wed, 01 Jan 2025 12:00:30 GMT", NOW) == 30.0
    assert retry_after_seconds("Wed, 01 Jan 2025 11:59:00 GMT", NOW) == 0.0  # already past
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("-3") is None
    assert retry_after_seconds("") is None
    assert retry_after_seconds(None) is None


def test_a_policy_refuses_impossible_limits() -> None:
    with pytest.raises(ValueError, match="at least 1 attempt"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="budget_s must not be negative"):
        RetryPolicy(budget_s=-1)


# -- the loop, on stamina ---------------------------------------------------------------------------


async def test_back_off_grows_exponentially_within_its_jitter_and_cap(waits: list[float]) -> None:
    policy = RetryPolicy(attempts=6, backoff_s=0.002, max_backoff_s=0.012, jitter_s=0.001)
    calls, attempt = failing(10, Retry("HTTP 503"))
    with pytest.raises(GaveUp) as caught:
        await retrying(policy, attempt, "GET /x")
    assert calls == [0, 1, 2, 3, 4, 5]
    assert caught.value.stopped == "attempts" and caught.value.attempts == 6
    assert len(waits) == 5
    tolerance = 1e-9  # stamina reports each wait as a difference of sums of floats
    for retry, wait in enumerate(waits, start=1):
        floor = min(policy.max_backoff_s, policy.backoff_s * 2 ** (retry - 1))
        assert floor - tolerance <= wait <= policy.longest_backoff(retry) + tolerance, (retry, wait)
    assert max(waits) <= policy.max_backoff_s + tolerance


async def test_the_budget_ends_a_call_before_its_attempts(waits: list[float]) -> None:
    policy = RetryPolicy(attempts=100, backoff_s=0.02, max_backoff_s=0.02, jitter_s=0.0, budget_s=0.1)
    calls, attempt = failing(1000, Retry("HTTP 502"))
    began = time.monotonic()
    with pytest.raises(GaveUp) as caught:
        await retrying(policy, attempt, "GET /x")
    elapsed = time.monotonic() - began
    assert caught.value.stopped == "budget" and 3 <= caught.value.attempts == len(calls) < 100
    assert elapsed < 0.1 + 0.3  # no wait past the budget (plus slack); 100 attempts would take 2 s
    assert "its time budget of 0.1 s is spent" in caught.value.message


async def test_retry_after_is_waited_for(waits: list[float]) -> None:
    policy = RetryPolicy(backoff_s=5.0)  # a back-off this long would fail the timing below
    calls, attempt = failing(1, Retry("HTTP 503", retry_after=0.05))
    began = time.monotonic()
    assert await retrying(policy, attempt, "GET /x") == "done"
    assert calls == [0, 1]
    assert time.monotonic() - began >= 0.05
    assert waits == [pytest.approx(0.05)]


async def test_a_retry_after_too_long_ends_the_call_at_once_and_says_so() -> None:
    policy = RetryPolicy(max_retry_after_s=60.0)
    calls, attempt = failing(1, Retry("HTTP 503", retry_after=3600.0))
    with pytest.raises(GaveUp) as caught:
        await retrying(policy, attempt, "GET /jobs/1")
    assert len(calls) == 1 and caught.value.stopped == "retry_after"
    assert caught.value.message == (
        "GET /jobs/1: HTTP 503 (asked to retry after 3600 s, longer than the 60 s it may wait)"
    )


async def test_other_failures_are_not_retried() -> None:
    calls: list[int] = []

    async def attempt(state: CallState) -> str:
        calls.append(state.resend)
        raise KeyError("not an HTTP failure")

    with pytest.raises(KeyError):
        await retrying(RetryPolicy(), attempt, "GET /x")
    assert calls == [0]


async def test_a_create_in_doubt_is_looked_for_before_it_is_sent_again() -> None:
    policy = RetryPolicy(attempts=5, backoff_s=0.001, max_backoff_s=0.001)
    steps: list[str] = []
    made: list[str] = []

    async def send(state: CallState) -> str:
        steps.append("send")
        if len(made) == 0:
            made.append("job-1")  # the server made it, but the answer was lost
            raise InDoubt("no answer within 1 s", no_answer=True)
        return "unreachable"

    async def find(state: CallState) -> str | None:
        steps.append("find")
        return made[0] if made else None

    assert await create_without_duplicates(policy, send, find, "create") == "job-1"
    assert steps == ["send", "find"]


async def test_a_create_that_made_nothing_is_sent_again_in_the_same_loop() -> None:
    policy = RetryPolicy(attempts=4, backoff_s=0.001, max_backoff_s=0.001)
    steps: list[str] = []

    async def send(state: CallState) -> str:
        steps.append("send")
        if steps.count("send") == 1:
            raise InDoubt("HTTP 500", no_answer=False)
        return "job-2"

    async def find(state: CallState) -> str | None:
        steps.append("find")
        return None

    assert await create_without_duplicates(policy, send, find, "create") == "job-2"
    assert steps == ["send", "find", "send"]
    # The looks count against the same attempts: with 2, the call gives up after the look.
    steps.clear()
    with pytest.raises(GaveUp) as caught:
        await create_without_duplicates(RetryPolicy(attempts=2, backoff_s=0.001), send, find, "create")
    assert steps == ["send", "find"] and caught.value.attempts == 2


# -- the rules, applied by HttpApi ------------------------------------------------------------------


def api(handler: httpx.MockTransport, tokens: TokenSource | None = None) -> HttpApi:
    return HttpApi(
        "http://platform.test",
        timeout_s=1.0,
        policy=RetryPolicy(backoff_s=0.001, max_backoff_s=0.002),
        rules=RetryRules(),
        tracer_name="test",
        tokens=tokens,
        transport=handler,
    )


class Server:
    """An in-memory API that answers from a script of statuses and records what it was sent."""

    def __init__(self, *answers: int | type[Exception], headers: dict[str, str] | None = None) -> None:
        self.answers = list(answers)
        self.headers = headers or {}
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, type):
            raise answer("scripted failure")
        return httpx.Response(answer, headers=self.headers, text=f"answer {answer}")


async def test_a_retryable_status_is_retried_and_the_last_answer_returned() -> None:
    server = Server(503, 502, 200)
    response = await api(httpx.MockTransport(server)).call("GET", "/x")
    assert response.status_code == 200 and len(server.seen) == 3


async def test_a_final_status_is_returned_at_once() -> None:
    server = Server(404)
    assert (await api(httpx.MockTransport(server)).call("GET", "/x")).status_code == 404
    assert len(server.seen) == 1


async def test_a_create_is_resent_only_when_the_server_surely_did_nothing() -> None:
    refused = Server(httpx.ConnectError, 429, 200)
    assert (await api(httpx.MockTransport(refused)).call("POST", "/x", idempotent=False)).status_code == 200
    assert len(refused.seen) == 3
    for answer, no_answer in ((502, False), (httpx.ReadTimeout, True)):
        server = Server(answer)
        with pytest.raises(InDoubt) as caught:
            await api(httpx.MockTransport(server)).call("POST", "/x", idempotent=False)
        assert caught.value.no_answer is no_answer and len(server.seen) == 1


async def test_a_refused_token_file_is_read_again_once_per_call(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old")
    tokens = TokenSource(FileSecret(token_file), label="test token", variable="EB_TEST_TOKEN")
    server = Server(200)
    client = api(httpx.MockTransport(server), tokens)
    await client.call("GET", "/x")  # reads "old"
    token_file.write_text("new")  # renewed; the file is not looked at again before recheck_s
    server.answers = [401, 200]
    assert (await client.call("GET", "/x")).status_code == 200
    assert [r.headers["authorization"] for r in server.seen[1:]] == ["Bearer old", "Bearer new"]
    server.answers = [401, 401, 200]
    assert (await client.call("GET", "/x")).status_code == 401  # re-read once; then it is final
    assert len(server.seen) == 5


async def test_a_static_token_that_is_refused_is_final_at_once() -> None:
    server = Server(401)
    tokens = TokenSource(SecretStr("s3cret"), label="test token", variable="EB_TEST_TOKEN")
    assert (await api(httpx.MockTransport(server), tokens).call("GET", "/x")).status_code == 401
    assert len(server.seen) == 1
