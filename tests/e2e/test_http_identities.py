"""Local identities on a running broker: the admin API and ``broker users`` change the same store,
and each change holds at the user's next request; event-stream tokens outlive a restart of the
offers process (their key is kept in the data directory)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.ops.embedded import wait_for_port
from tests.e2e.helpers import run_cli
from tests.e2e.http_support import ADMIN, ALICE, JSON, HttpBroker, start_http_broker


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpBroker]:
    running = start_http_broker(tmp_path_factory.mktemp("identities-broker"))
    try:
        yield running
    finally:
        running.broker.stop()


def users(http: HttpBroker, *args: str, stdin: str | None = None) -> list[str]:
    """`broker users ARGS` on the running broker's data directory; its output lines."""
    done = run_cli("users", *args, "--data-dir", str(http.broker.data_dir), stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def status(http: HttpBroker, auth: tuple[str, str]) -> int:
    with http.client(auth) as client:
        return client.get("/whoami", headers=JSON).status_code


def test_the_admin_api_and_the_cli_manage_the_same_identities(http: HttpBroker) -> None:
    users(http, "add", "carol", "--password-stdin", stdin="c-pw\n")
    with http.client(("carol", "c-pw")) as carol:
        me = carol.get("/whoami", headers=JSON).json()
    assert (me["username"], me["owner"], me["admin"]) == ("carol", "local==carol", False)

    with http.client(ADMIN) as admin:
        listed = admin.get("/admin/identities", headers=JSON).json()["identities"]
        assert [i["username"] for i in listed] == ["alice", "bob", "carol"]
        assert admin.post("/admin/identities/carol/disable", headers=JSON).status_code == 200
    assert status(http, ("carol", "c-pw")) == 401
    assert json.loads(users(http, "list", "--json")[0])[2] == {
        "username": "carol",
        "admin": False,
        "disabled": True,
    }

    users(http, "enable", "carol")
    assert status(http, ("carol", "c-pw")) == 200
    users(http, "passwd", "carol", "--password-stdin", stdin="c-pw-2\n")
    assert status(http, ("carol", "c-pw")) == 401
    assert status(http, ("carol", "c-pw-2")) == 200

    # An identity added as an administrator is one over HTTP.
    users(http, "add", "dora", "--admin", "--password-stdin", stdin="d-pw\n")
    with http.client(("dora", "d-pw")) as dora:
        assert dora.post("/admin/identities/carol/disable", headers=JSON).status_code == 200
    assert status(http, ("carol", "c-pw-2")) == 401


def test_an_event_token_outlives_a_restart_of_the_offers_service(http: HttpBroker) -> None:
    with http.client(ALICE) as alice:
        token = alice.post("/events/token", headers=JSON).json()["token"]
    assert (Path(http.broker.data_dir) / "http-secret").stat().st_mode & 0o777 == 0o600
    http.broker.restart("offers")
    port = int(http.base_url.rsplit(":", 1)[1])
    wait_for_port(port, 30)
    with (
        httpx.Client(base_url=http.base_url, timeout=30) as raw,
        raw.stream("GET", "/events", params={"token": token}) as stream,
    ):
        assert stream.status_code == 200
        assert next(stream.iter_lines()).startswith("retry:")
    with httpx.Client(base_url=http.base_url, timeout=30) as raw:
        assert raw.get("/events", params={"token": token + "x"}, headers=JSON).status_code == 401
