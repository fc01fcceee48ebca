"""Each service's handlers on a store of their own, for one test (see units.py): every test that
takes one of these fixtures runs twice, on SQLite in memory and on a fresh schema of the run's
PostgreSQL (tests/postgres.py), the two implementations of the store port."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.bus.postgres import PostgresStore
from shared.bus.store import Schema, Store
from tests.handlers.harness import StoreMaker, in_memory
from tests.handlers.units import Launcher, Offers, Scheduler, launcher_unit, offers_unit, scheduler_unit
from tests.postgres import PostgresServer


@pytest.fixture(scope="module")
def handlers_database(postgres: PostgresServer) -> str:
    """One database per test module; each test's store has a schema of its own in it."""
    return postgres.database("handlers")


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest) -> StoreMaker:
    if request.param == "sqlite":
        return in_memory
    # Asked for only here, so a run of the SQLite half alone never starts PostgreSQL.
    server: PostgresServer = request.getfixturevalue("postgres")
    url: str = request.getfixturevalue("handlers_database")

    def on_postgres(service: str, schema: Schema | str) -> Store:
        return PostgresStore(url, server.schema_name(service), schema)

    return on_postgres


@pytest.fixture
async def scheduler(stores: StoreMaker) -> AsyncIterator[Scheduler]:
    async with scheduler_unit(stores=stores) as unit:
        yield unit


@pytest.fixture
async def launcher(stores: StoreMaker) -> AsyncIterator[Launcher]:
    async with launcher_unit(stores=stores) as unit:
        yield unit


@pytest.fixture
async def offers(stores: StoreMaker) -> AsyncIterator[Offers]:
    async with offers_unit(stores=stores) as unit:
        yield unit
