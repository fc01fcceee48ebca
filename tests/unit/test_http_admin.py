"""The admin API of local identities on an in-process app, what a change does to the next request
(whoever makes it: this app, or another process writing the identity store), and the move of the
identities that older data directories kept in the offers database."""

from __future__ import annotations

import base64
import hashlib
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest

from services.offers.http.migration import move_legacy_identities
from services.offers.store import ReadModel
from shared.auth import owners
from shared.auth.identities import store_in
from tests.unit.test_http_auth import app_client, basic

ADMIN = basic("admin", "pw")


async def add(client: httpx.AsyncClient, username: str, password: str, **extra: object) -> httpx.Response:
    body = {"username": username, "password": password, **extra}
    return await client.post("/admin/identities", json=body, headers=ADMIN)


async def whoami(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.get("/whoami", headers=basic(username, password))


async def test_the_admin_lists_creates_disables_enables_and_resets(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, _):
        assert (await add(client, "dave", "d-pw")).status_code == 201
        created = await add(client, "erin", "e-pw", admin=True)
        assert created.json() == {"username": "erin", "admin": True, "disabled": False}
        listed = await client.get("/admin/identities", headers=ADMIN)
        assert listed.json() == {
            "identities": [
                {"username": "dave", "admin": False, "disabled": False},
                {"username": "erin", "admin": True, "disabled": False},
            ]
        }
        assert "hash" not in listed.text and "argon2" not in listed.text

        # An identity with the admin flag is an administrator: it may manage identities too.
        erin = basic("erin", "e-pw")
        assert (await whoami(client, "erin", "e-pw")).json()["admin"] is True
        assert (await client.get("/admin/identities", headers=erin)).status_code == 200

        assert (await whoami(client, "dave", "d-pw")).status_code == 200  # remembered from now on
        disabled = await client.post("/admin/identities/dave/disable", headers=erin)
        assert disabled.json() == {"username": "dave", "admin": False, "disabled": True}
        refused = await whoami(client, "dave", "d-pw")
        assert refused.status_code == 401
        wrong = await whoami(client, "dave", "nope")
        assert refused.json()["messages"][0]["message"] == wrong.json()["messages"][0]["message"]

        enabled = await client.post("/admin/identities/dave/enable", headers=ADMIN)
        assert enabled.json()["disabled"] is False
        assert (await whoami(client, "dave", "d-pw")).status_code == 200

        reset = await client.put("/admin/identities/dave/password", json={"password": "new"}, headers=ADMIN)
        assert reset.status_code == 200
        assert (await whoami(client, "dave", "d-pw")).status_code == 401
        assert (await whoami(client, "dave", "new")).status_code == 200


async def test_admin_api_refusals(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, _):
        assert (await add(client, "dave", "d-pw")).status_code == 201
        dave = basic("dave", "d-pw")
        for method, path in [
            ("GET", "/admin/identities"),
            ("POST", "/admin/identities"),
            ("POST", "/admin/identities/dave/disable"),
            ("POST", "/admin/identities/dave/enable"),
            ("PUT", "/admin/identities/dave/password"),
        ]:
            response = await client.request(method, path, json={"password": "x"}, headers=dave)
            assert response.status_code == 403, (method, path)
            anonymous = await client.request(method, path, json={"password": "x"})
            assert anonymous.status_code == 401, (method, path)

        for path in ("/admin/identities/nobody/disable", "/admin/identities/nobody/enable"):
            missing = await client.post(path, headers=ADMIN)
            assert missing.status_code == 404
            assert "nobody" in missing.json()["messages"][0]["message"]
        unknown = await client.put("/admin/identities/nobody/password", json={"password": "x"}, headers=ADMIN)
        assert unknown.status_code == 404

        for status, response in [
            (400, await client.post("/admin/identities/bad%20name/disable", headers=ADMIN)),
            (400, await client.put("/admin/identities/dave/password", json={"password": ""}, headers=ADMIN)),
            (400, await client.put("/admin/identities/dave/password", json={"pw": "x"}, headers=ADMIN)),
            (422, await client.put("/admin/identities/dave/password", json=["x"], headers=ADMIN)),
            (400, await add(client, "f", "g", admin="yes")),
            (400, await add(client, "bad name", "g")),
            (422, await client.post("/admin/identities", json="dave", headers=ADMIN)),
            (409, await add(client, "dave", "other")),
            (409, await add(client, "admin", "other")),  # the configured administrator's name
        ]:
            assert response.status_code == status, response.text
            assert response.json()["messages"][0]["message"]
        too_long = await client.put(
            "/admin/identities/dave/password", json={"password": "é" * 600}, headers=ADMIN
        )
        assert too_long.status_code == 400
        assert "1024 bytes" in too_long.json()["messages"][0]["message"]
        # Nothing refused changed anything.
        assert (await whoami(client, "dave", "d-pw")).status_code == 200


async def test_a_change_by_another_process_holds_at_the_next_request(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, _):
        assert (await add(client, "dave", "d-pw")).status_code == 201
        assert (await whoami(client, "dave", "d-pw")).status_code == 200
        other = store_in(tmp_path)  # as `broker users` would: the same file, another connection
        other.disable("dave")
        assert (await whoami(client, "dave", "d-pw")).status_code == 401
        other.enable("dave")
        other.set_password("dave", "changed")
        assert (await whoami(client, "dave", "d-pw")).status_code == 401
        me = await whoami(client, "dave", "changed")
        assert me.json()["owner"] == owners.local("dave").token


async def test_the_configured_admin_is_local_and_admin(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, _):
        me = (await client.get("/whoami", headers=ADMIN)).json()
        assert (me["username"], me["owner"], me["admin"]) == ("admin", "local==admin", True)
        assert (await client.get("/whoami", headers=basic("admin", "wrong"))).status_code == 401


# -- identities of the offers database of before ------------------------------------------------------


def scrypt_hash(password: str, salt: bytes) -> str:
    """A hash as the broker wrote them into the offers database before the identity store."""
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${2**14}$8$1${b64(salt).decode()}${b64(digest).decode()}"


def old_offers_database(path: Path, rows: list[tuple[str, str]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE identities (uuid TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, "
            "password_hash TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        db.executemany(
            "INSERT INTO identities VALUES (?, ?, ?, '2026-01-01T00:00:00+00:00')",
            [(f"id-{name}", name, hashed) for name, hashed in rows],
        )
    db.close()


def stored_hash(data_dir: Path, username: str) -> str:
    with sqlite3.connect(data_dir / "identities.db") as db:
        row = db.execute("SELECT password_hash FROM identities WHERE username = ?", (username,)).fetchone()
    db.close()
    return str(row[0])


async def test_old_identities_move_to_the_store_and_keep_their_passwords(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_hash = scrypt_hash("old-pw", b"0123456789abcdef")
    old_offers_database(
        tmp_path / "offers.sqlite", [("olga", old_hash), ("pete", scrypt_hash("p", b"s" * 16))]
    )
    store = store_in(tmp_path)
    store.add("pete", "newer")  # already in the store: the store's version wins
    read_model = ReadModel(tmp_path / "offers.sqlite")
    await read_model.open()
    try:
        with caplog.at_level(logging.INFO):
            assert await move_legacy_identities(read_model, store) == 1
        assert "moved 1 local identities" in caplog.text and "1 were there already" in caplog.text
        assert "scrypt$" not in caplog.text
        assert await move_legacy_identities(read_model, store) == 0  # again: nothing left to move
        tables = await read_model.fetchall("SELECT name FROM sqlite_master WHERE name = 'identities'")
        assert tables == []  # no stale copy of a hash stays in the offers database
    finally:
        await read_model.close()
    assert stored_hash(tmp_path, "olga") == old_hash

    async with app_client(tmp_path) as (client, _):
        assert (await whoami(client, "olga", "wrong")).status_code == 401
        assert stored_hash(tmp_path, "olga") == old_hash
        assert (await whoami(client, "olga", "old-pw")).status_code == 200
        assert stored_hash(tmp_path, "olga").startswith("$argon2id$")  # rehashed at the login
        assert (await whoami(client, "olga", "old-pw")).status_code == 200
        assert (await whoami(client, "pete", "p")).status_code == 401
        assert (await whoami(client, "pete", "newer")).status_code == 200


async def test_the_admin_routes_are_in_the_openapi_document(tmp_path: Path) -> None:
    async with app_client(tmp_path) as (client, _):
        document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    assert set(paths["/admin/identities"]) == {"get", "post"}
    assert set(paths["/admin/identities/{username}/disable"]) == {"post"}
    assert set(paths["/admin/identities/{username}/enable"]) == {"post"}
    password = paths["/admin/identities/{username}/password"]["put"]
    assert password["requestBody"]["content"]["application/yaml"]["schema"] == {
        "$ref": "#/components/schemas/PasswordRequest"
    }
    assert {"403", "404"} <= set(password["responses"])
    schemas = document["components"]["schemas"]
    assert set(schemas["IdentityRequest"]["properties"]) == {"username", "password", "admin"}
    assert set(schemas["IdentityView"]["properties"]) == {"username", "admin", "disabled"}
