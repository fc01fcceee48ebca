"""Offers replicas: several offers processes on one PostgreSQL store compete on its durables.

Every offer of every offer set is accepted at once against a small pool, through `broker bench`'s
overbooking scenario: the pool is never over-booked, nothing is lost, and the events stream stores
no offer set, update result or phase twice (no request is answered by two replicas)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.ops.bench import run_overbooking

pytestmark = pytest.mark.e2e

#: The issue's acceptance size (2,000 concurrent requests) is the `full_size` run below.
SMALL = 300


async def _check(tmp_path: Path, postgres_url: str, requests: int) -> dict[str, object]:
    result = await run_overbooking(
        tmp_path, requests, concurrency=requests, database_url=postgres_url, offers_replicas=2
    )
    assert result["answered"] == requests and result["lost"] == 0, result
    assert result["overbooked"] == 0, result
    assert result["stored_twice"] == {}, result
    assert result["accepted_twice_in_one_offer_set"] == 0, result
    assert result["services_exited"] == [], result
    assert result["accepted"] and result["peak_cores_booked"] == result["pool_cores"], result
    # Both replicas did a real share of the work (competing on the durables, not one idle).
    cpu = result["offers_cpu_s"]
    assert isinstance(cpu, list) and len(cpu) == 2 and min(cpu) > 0.25 * max(cpu), result
    return result


async def test_two_offers_replicas_on_postgres_never_overbook_or_answer_twice(
    tmp_path: Path, postgres_url: str
) -> None:
    await _check(tmp_path, postgres_url, SMALL)


@pytest.mark.full_size
async def test_two_offers_replicas_answer_2000_concurrent_requests(tmp_path: Path, postgres_url: str) -> None:
    result = await _check(tmp_path, postgres_url, 2000)
    print(result)  # the figures for docs/deployment.md (pytest -s)

