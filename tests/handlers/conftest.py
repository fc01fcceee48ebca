"""Each service's handlers on a store in memory, for one test (see units.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.handlers.units import Launcher, Offers, Scheduler, launcher_unit, offers_unit, scheduler_unit


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    async with scheduler_unit() as unit:
        yield unit


@pytest.fixture
async def launcher() -> AsyncIterator[Launcher]:
    async with launcher_unit() as unit:
        yield unit


@pytest.fixture
async def offers() -> AsyncIterator[Offers]:
    async with offers_unit() as unit:
        yield unit
