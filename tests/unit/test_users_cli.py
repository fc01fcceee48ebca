"""``broker users``: add, passwd, disable, enable and list local identities in a data directory,
passwords from a no-echo prompt or standard input, never from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from shared.auth.identities import store_in
from shared.ops import cli


def broker(data_dir: Path, *args: str, stdin: str | None = None, **env: str) -> Result:
    return CliRunner().invoke(
        cli.app, ["users", *args, "--data-dir", str(data_dir)], input=stdin, env={"EB_DATA_DIR": None, **env}
    )


def listed(data_dir: Path) -> list[dict[str, object]]:
    result = broker(data_dir, "list", "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def test_add_list_disable_enable_passwd(tmp_path: Path) -> None:
    added = broker(tmp_path, "add", "alice", "--password-stdin", stdin="a-pw\n")
    assert added.exit_code == 0, added.output
    prompted = broker(tmp_path, "add", "root", "--admin", stdin="r-pw\nr-pw\n")
    assert prompted.exit_code == 0, prompted.output
    assert "r-pw" not in prompted.output  # the prompt does not echo
    assert listed(tmp_path) == [
        {"username": "alice", "admin": False, "disabled": False},
        {"username": "root", "admin": True, "disabled": False},
    ]
    store = store_in(tmp_path)
    assert store.verify("alice", "a-pw") is not None
    assert store.verify("root", "r-pw") is not None

    assert broker(tmp_path, "disable", "alice").exit_code == 0
    assert store.verify("alice", "a-pw") is None
    assert listed(tmp_path)[0]["disabled"] is True
    assert broker(tmp_path, "enable", "alice").exit_code == 0
    assert broker(tmp_path, "passwd", "alice", "--password-stdin", stdin="new-pw\r\nignored\n").exit_code == 0
    assert store.verify("alice", "a-pw") is None
    assert store.verify("alice", "new-pw") is not None

    table = broker(tmp_path, "list")
    assert table.exit_code == 0 and "alice" in table.stdout and "root" in table.stdout
    assert "argon2" not in table.stdout


def test_the_prompt_asks_twice(tmp_path: Path) -> None:
    result = broker(tmp_path, "add", "alice", stdin="one\ntwo\none\none\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output
    assert store_in(tmp_path).verify("alice", "one") is not None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("add", "alice", "--password-stdin"), "x\n", "the identity alice exists"),
        (("add", "bad name", "--password-stdin"), "x\n", "a user name is 1 to 64"),
        (("add", "bob", "--password-stdin"), "\n", "no password on standard input"),
        (("add", "bob", "--password-stdin"), "", "no password on standard input"),
        (("add", "bob", "--password-stdin"), "é" * 600 + "\n", "at most 1024 bytes"),
        (("passwd", "nobody", "--password-stdin"), "x\n", "there is no identity nobody"),
        (("disable", "nobody"), None, "there is no identity nobody"),
        (("enable", "nobody"), None, "there is no identity nobody"),
        (("enable", "bad/name"), None, "a user name is 1 to 64"),
    ],
)
def test_clear_errors(tmp_path: Path, args: tuple[str, ...], stdin: str | None, message: str) -> None:
    assert broker(tmp_path, "add", "alice", "--password-stdin", stdin="a-pw\n").exit_code == 0
    result = broker(tmp_path, *args, stdin=stdin)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert [i["username"] for i in listed(tmp_path)] == ["alice"]


def test_no_store_is_made_by_reading_or_changing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    assert listed(empty) == []
    disabled = broker(empty, "disable", "alice")
    assert disabled.exit_code == 1
    assert "no local identities" in disabled.stderr
    assert not empty.exists()


def test_the_data_dir_comes_from_eb_data_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["users", "add", "alice", "--password-stdin"],
        input="pw\n",
        env={"EB_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    assert store_in(tmp_path).get("alice") is not None


def test_a_password_is_no_option() -> None:
    result = CliRunner().invoke(cli.app, ["users", "add", "alice", "--password", "secret"])
    assert result.exit_code == 2
