"""`broker asyncapi` as a user runs it: a process that prints the bus contract, valid AsyncAPI 3.0.0."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from tests.asyncapi_schema import problems
from tests.e2e.helpers import run_cli


def test_broker_asyncapi_prints_a_valid_document(asyncapi_validator: Draft7Validator, tmp_path: Path) -> None:
    # No broker runs: the document comes from the installed services' wiring tables alone.
    env = {"EB_DATA_DIR": str(tmp_path / "data")}
    printed = run_cli("asyncapi", **env)
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    assert problems(asyncapi_validator, document) == []
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert "eb.requests.{owner}.{request_id}" in addresses

    as_yaml = run_cli("asyncapi", "--yaml", **env)
    assert as_yaml.returncode == 0, as_yaml.stderr
    assert yaml.safe_load(as_yaml.stdout) == document
    assert not (tmp_path / "data").exists()


def test_broker_asyncapi_says_in_one_line_what_it_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    printed = run_cli("asyncapi", EB_POOLS=str(missing))
    assert printed.returncode == 1
    assert printed.stdout == ""
    expected = f"error: could not describe the services: the pools file {missing} does not exist"
    assert printed.stderr.strip() == expected
