"""Rucio tokens from Rucio's own `/auth/userpass`, renewed before they end, against the fake Rucio,
whose tokens end and are refused (401) after that. One clock, moved by the test, drives both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from services.scheduler.rucio import RucioClient, RucioLookupFailed
from services.scheduler.rucio_auth import ASSUMED_LIFETIME_S, renewal_time, token_end
from tests.fakes.rucio import FakeRucio, RucioCatalogue
from tests.fakes.serve import serve_asgi

PASSWORD = "s3cret-pa55"
LIFETIME_S = 3600.0


class WallClock:
    """Epoch seconds that only the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def fake(clock: WallClock) -> FakeRucio:
    catalogue = RucioCatalogue(tokens=set(), accounts={("broker", "eb"): PASSWORD})
    catalogue.add_file("testing", "a.fits", 10, ["UKSRC-RAL"])
    return FakeRucio(catalogue, token_lifetime_s=LIFETIME_S, clock=clock)


@pytest.fixture
def url(fake: FakeRucio) -> Iterator[str]:
    served, stop = serve_asgi(fake)
    yield served
    stop()


def client_for(url: str, clock: WallClock, **overrides: object) -> RucioClient:
    credentials: dict[str, object] = {
        "account": "broker", "username": "eb", "password": PASSWORD, "renew_before_s": 300.0,
    } | overrides  # fmt: skip
    return RucioClient(url, None, cache_s=0, attempts=2, backoff_s=0, wall_clock=clock, **credentials)


@pytest.fixture
async def rucio(url: str, clock: WallClock) -> AsyncIterator[RucioClient]:
    async with client_for(url, clock) as client:
        yield client


def refused(fake: FakeRucio) -> list[dict[str, object]]:
    return [r for r in fake.recorded("GET", "/replicas/*") if r.get("status") == 401]


async def test_a_long_running_client_keeps_working_across_token_expiry(
    rucio: RucioClient, fake: FakeRucio, clock: WallClock
) -> None:
    # A day of look-ups every ten minutes: tokens of one hour, each renewed five minutes before it ends.
    for _ in range(24 * 6):
        info = await rucio.replicas("testing", "a.fits")
        assert info.rses == ("UKSRC-RAL",)
        clock.now += 600
    assert 24 <= fake.catalogue.issued <= 30  # about one token per hour, not one per look-up
    # Every look-up carried a live token: none was refused.
    assert len(fake.recorded("GET", "/replicas/*")) == 24 * 6 and refused(fake) == []
    assert len(fake.recorded("GET", "/auth/userpass")) == fake.catalogue.issued
    # The password went out only to the auth endpoint, and the fake's record does not hold it.
    assert PASSWORD not in str(fake.recorded())


async def test_the_fake_refuses_a_token_after_its_end(url: str, fake: FakeRucio, clock: WallClock) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        answer = await http.get(
            "/auth/userpass",
            headers={"X-Rucio-Account": "broker", "X-Rucio-Username": "eb", "X-Rucio-Password": PASSWORD},
        )
        token = answer.headers["X-Rucio-Auth-Token"]
        stated = answer.headers["X-Rucio-Auth-Token-Expires"]
        assert token_end(stated, clock.now) == int(clock.now + LIFETIME_S)
        headers = {"X-Rucio-Auth-Token": token}
        assert (await http.get("/replicas/testing/a.fits", headers=headers)).status_code == 200
        clock.now += LIFETIME_S
        expired = await http.get("/replicas/testing/a.fits", headers=headers)
        assert expired.status_code == 401 and expired.headers["ExceptionClass"] == "CannotAuthenticate"


async def test_a_token_refused_before_its_stated_end_is_replaced_at_once(
    url: str, fake: FakeRucio, clock: WallClock
) -> None:
    # The client's clock runs an hour late: it believes its token good when the server says it ended.
    late = WallClock()
    late.now = clock.now
    async with client_for(url, late) as client:
        await client.replicas("testing", "a.fits")
        clock.now += LIFETIME_S + 1
        assert (await client.replicas("testing", "a.fits")).rses == ("UKSRC-RAL",)
    assert fake.catalogue.issued == 2  # the refusal (401) got a new token for the one resend
    assert len(refused(fake)) == 1


async def test_wrong_credentials_are_a_clear_refusal_without_the_password(url: str, clock: WallClock) -> None:
    async with client_for(url, clock, password="wrong-" + PASSWORD) as client:
        with pytest.raises(RucioLookupFailed) as failed:
            await client.replicas("testing", "a.fits")
    message = failed.value.message
    assert "Rucio refused the credentials of account 'broker', user 'eb'" in message
    assert "EB_RUCIO_PASSWORD" in message and PASSWORD not in message


def test_renewal_time_leaves_the_margin_but_never_renews_in_the_first_half() -> None:
    assert renewal_time(0, 3600, 300) == 3300
    assert renewal_time(0, 60, 300) == 30  # a short-lived token: halfway through
    assert renewal_time(100, 50, 300) == 50  # already ended: renew now
    assert token_end(None, 10) == token_end("not a date", 10) == 10 + ASSUMED_LIFETIME_S
    assert token_end("Thu, 03 Dec 2026 22:00:00 UTC", 0) == 1796335200
