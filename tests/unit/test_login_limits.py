"""Failed logins per user name and per address: the pure limiter with its clock in the tests' hands,
and the app's answers (429 with Retry-After, no password checked) on an in-process server."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.offers.http.app import create_app
from services.offers.http.auth import Authenticator
from services.offers.http.context import HttpContext
from services.offers.http.login_limits import Attempt, LoginLimiter, Refused, basic_user
from services.offers.http.settings import HttpSettings
from services.offers.store import ReadModel
from shared.auth.identities import IdentityStore, LocalIdentity
from tests.unit.test_http_auth import NoBus, basic

A, B = "192.0.2.1", "192.0.2.2"


def attempt(limiter: LoginLimiter, user: str, address: str, now: float) -> Attempt:
    started = limiter.begin(user, address, now)
    assert isinstance(started, Attempt), started
    return started


def fail(limiter: LoginLimiter, user: str, address: str, now: float, times: int = 1) -> None:
    for _ in range(times):
        limiter.failed(attempt(limiter, user, address, now), now)


def test_a_user_name_is_blocked_after_its_failures_until_they_age_out() -> None:
    limiter = LoginLimiter(per_user=3, per_address=100, window_s=60)
    fail(limiter, "alice", A, now=0)
    fail(limiter, "alice", B, now=10, times=2)
    refused = limiter.begin("alice", "192.0.2.9", 30)  # any address: the name is what is guessed at
    assert refused == Refused(30, "for this user name")
    limiter.succeeded(attempt(limiter, "bob", A, now=30))
    # The first failure leaves the window at 60 s; then one more try, not three.
    assert limiter.begin("alice", A, 59.5) == Refused(1, "for this user name")
    fail(limiter, "alice", A, now=60)
    assert limiter.begin("alice", A, 61) == Refused(9, "for this user name")
    assert isinstance(limiter.begin("alice", A, 70), Attempt)


def test_an_address_is_blocked_after_failures_on_many_names() -> None:
    limiter = LoginLimiter(per_user=5, per_address=4, window_s=60)
    for index in range(4):
        fail(limiter, f"user{index}", A, now=index)
    assert limiter.begin("someone-else", A, 5) == Refused(55, "from this address")
    limiter.succeeded(attempt(limiter, "someone-else", B, now=5))
    # Malformed credentials name no user, and count for the address all the same.
    fail(limiter, "", B, now=5, times=4)
    assert limiter.begin("", B, 6) == Refused(59, "from this address")


def test_a_success_forgives_only_its_own_user_and_address() -> None:
    limiter = LoginLimiter(per_user=3, per_address=3, window_s=60)
    fail(limiter, "alice", A, now=0, times=2)  # an attacker at A guessing alice's password
    fail(limiter, "bob", B, now=0, times=2)  # bob mistyping at B
    limiter.succeeded(attempt(limiter, "alice", B, now=1))  # alice herself, elsewhere
    fail(limiter, "alice", A, now=2)
    assert limiter.begin("alice", B, 3) == Refused(57, "for this user name")  # A's guesses still count
    limiter.succeeded(attempt(limiter, "bob", B, now=3))  # bob gets it right at last
    fail(limiter, "bob", B, now=4, times=2)
    assert isinstance(limiter.begin("bob", B, 5), Attempt)
    # A success at an address does not wipe what that address tried against other names.
    limiter = LoginLimiter(per_user=10, per_address=3, window_s=60)
    fail(limiter, "alice", A, now=0, times=2)
    limiter.succeeded(attempt(limiter, "mallory", A, now=1))
    fail(limiter, "carol", A, now=2)
    assert limiter.begin("mallory", A, 3) == Refused(57, "from this address")


def test_attempts_under_way_count_until_they_settle() -> None:
    limiter = LoginLimiter(per_user=3, per_address=100, window_s=60)
    running = [attempt(limiter, "alice", A, now=0) for _ in range(3)]
    assert limiter.begin("alice", A, 0) == Refused(1, "for this user name")
    for started in running:
        limiter.succeeded(started)
    assert limiter.remembered() == (0, 0)
    running = [attempt(limiter, "alice", A, now=0) for _ in range(3)]
    limiter.abandoned(running[0])  # the check itself broke: no failure
    limiter.failed(running[1], 1)
    limiter.failed(running[2], 1)
    assert isinstance(limiter.begin("alice", A, 2), Attempt)


def test_memory_is_bounded() -> None:
    limiter = LoginLimiter(per_user=5, per_address=5, window_s=60, max_keys=100)
    for index in range(5000):
        fail(limiter, f"user{index}", f"198.51.100.{index % 250}:{index}", now=index / 1000)
    assert limiter.remembered() == (100, 100)
    # The most recent are the ones kept: the last user is still counted.
    fail(limiter, "user4999", B, now=6, times=4)
    assert limiter.begin("user4999", B, 6) == Refused(59, "for this user name")  # first failed at 4.999 s


def test_basic_user() -> None:
    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert basic_user(header("alice:pw:with:colons")) == "alice"
    assert basic_user(header("no-colon")) == ""
    assert basic_user("Basic !!!") == ""
    assert basic_user("basic   " + base64.b64encode(b"bob:x").decode()) == "bob"
    assert basic_user("Bearer abc") is None
    assert basic_user(None) is None
    assert basic_user("") is None


@pytest.fixture
async def read_model(tmp_path: Path) -> AsyncIterator[ReadModel]:
    model = ReadModel(tmp_path / "offers.sqlite")
    await model.open()
    yield model
    await model.close()


class CountingStore(IdentityStore):
    """The real store, counting the password checks it is asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lookups: list[str] = []

    def verify_stamped(self, username: str, password: str) -> tuple[LocalIdentity, str] | None:
        self.lookups.append(username)
        return super().verify_stamped(username, password)


async def test_refused_logins_get_429_without_checking_the_password(
    read_model: ReadModel, tmp_path: Path
) -> None:
    settings = HttpSettings(
        http_port=8082,
        admin_username="admin",
        admin_password="pw",
        login_failures_per_user=2,
        login_failures_per_address=5,
    )
    app = create_app(settings, read_model, NoBus(), data_dir=tmp_path)
    ctx = app.state.ctx
    assert isinstance(ctx, HttpContext)
    store = CountingStore(tmp_path / "counted.db")
    store.add("dave", "right")
    store.add("erin", "also-right")
    lookups = store.lookups
    ctx.auth = Authenticator(admin_username="admin", admin_password="pw", identities=store)
    transport = httpx.ASGITransport(app=app, client=(A, 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8082") as client:
        for _ in range(2):
            assert (await client.get("/whoami", headers=basic("dave", "wrong"))).status_code == 401
        assert lookups == ["dave", "dave"]
        for password in ("wrong", "right"):  # refused before the password is looked at
            refused = await client.get("/whoami", headers=basic("dave", password))
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= 60
            message = refused.json()["messages"][0]
            assert message["kind"] == "urn:too-many-login-failures"
            assert "for this user name" in message["message"]
        assert lookups == ["dave", "dave"]  # no lookup, no hash
        assert (await client.get("/whoami", headers=basic("erin", "also-right"))).status_code == 200
        # Bearer tokens and anonymous calls are not Basic logins: no count, no 429.
        assert (await client.get("/whoami", headers={"Authorization": "Bearer x"})).status_code == 401
        assert (await client.get("/whoami")).status_code == 401
