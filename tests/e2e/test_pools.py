"""Several pools through the bus: every pool that can serve gives offers, per-pool limits and costs
apply, storage is booked as well as compute, and `broker pools` shows what is held."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.client import BrokerClient
from shared.models import LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND, OfferSetResponse
from shared.ops.embedded import EmbeddedBroker
from tests.conftest import local_pool_access
from tests.e2e.helpers import login_env, run_cli

STORAGE_KIND = (
    "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/storage/simple-storage-resource.yaml"
)
COST_KIND = (
    "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/costs/simple-minmax-float-cost.yaml"
)

POOLS = f"""
[[pools]]
name = "small"
platform = "local"
site = "SITE-A"
cores = 2
memory_gib = 4
storage_gib = 10
grid_s = 1
{local_pool_access()}[pools.limits]
duration_s = 600
[[pools.costs]]
kind = "{COST_KIND}"
type = "urn:ivoa:calycopis:cost:monetary"
min = 0.1
max = 0.2

[[pools]]
name = "big"
platform = "local"
site = "SITE-B"
cores = 8
memory_gib = 16
storage_gib = 100
grid_s = 1
max_offers = 2
{local_pool_access()}"""


@pytest.fixture
def two_pools(broker_factory: Callable[..., EmbeddedBroker], tmp_path: Path) -> EmbeddedBroker:
    pools = tmp_path / "pools.toml"
    pools.write_text(POOLS)
    return broker_factory(EB_POOLS=str(pools))


def request(duration: str = "PT5M", storage_gib: int | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": ["true"]},
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": duration}},
    }
    if storage_gib is not None:
        document["storage"] = [
            {"kind": STORAGE_KIND, "meta": {"name": "scratch"}, "size": {"min": storage_gib}}
        ]
    return document


def pools_of(offerset: OfferSetResponse, broker: EmbeddedBroker) -> list[str]:
    """The pool of each offer, from the broker's `broker pools`-independent source: the offers' costs."""
    return ["small" if offer.costs else "big" for offer in offerset.offers or []]


async def test_every_pool_that_can_serve_gives_offers(two_pools: EmbeddedBroker) -> None:
    async with BrokerClient(two_pools.url, two_pools.login("alice")) as client:
        both = await client.submit(request("PT5M"))
        assert both.result == "YES"
        # 4 offers from `small` (its default) and 2 from `big`, earliest first.
        assert sorted(pools_of(both, two_pools)) == ["big", "big", "small", "small", "small", "small"]
        starts = [o.schedule.available.start for o in both.offers or []]  # type: ignore[union-attr]
        assert starts == sorted(starts)
        cost = next(o.costs for o in both.offers or [] if o.costs)
        assert cost is not None and cost[0].type == "urn:ivoa:calycopis:cost:monetary"

        # Over `small`'s duration cap: only `big` offers.
        long = await client.submit(request("PT20M"))
        assert pools_of(long, two_pools) == ["big", "big"]


async def test_storage_is_booked_as_well_as_compute(two_pools: EmbeddedBroker) -> None:
    async with BrokerClient(two_pools.url, two_pools.login("alice")) as client:
        # 60 GiB fits only `big` (100 GiB); its two offers are back to back, and a second request
        # needing 60 GiB cannot overlap the first one's holds.
        first = await client.submit(request("PT5M", storage_gib=60))
        second = await client.submit(request("PT5M", storage_gib=60))
        assert pools_of(first, two_pools) == ["big", "big"] and pools_of(second, two_pools) == ["big", "big"]
        first_ends = max(o.schedule.available.start for o in first.offers or [])  # type: ignore[union-attr]
        second_starts = min(o.schedule.available.start for o in second.offers or [])  # type: ignore[union-attr]
        assert second_starts > first_ends
        # More storage than any pool has: a NO that says so.
        refused = await client.submit(request("PT5M", storage_gib=500))
        assert refused.result == "NO"
        texts = " ".join(m.message or "" for m in refused.meta.messages or [])  # type: ignore[union-attr]
        assert "500 GiB of storage" in texts


def test_broker_pools_lists_the_pools_and_their_use(two_pools: EmbeddedBroker) -> None:
    alice = login_env(two_pools, "alice")
    done = run_cli("submit", "shared/examples/hello-command.yaml", "--nats-url", two_pools.url, **alice)
    assert done.returncode == 0, done.stderr
    listed = run_cli("pools", "--json", "--nats-url", two_pools.url, **alice)
    assert listed.returncode == 0, listed.stderr
    pools = {p["name"]: p for p in json.loads(listed.stdout)}
    assert set(pools) == {"small", "big"}
    assert pools["big"]["cores"] == 8 and pools["small"]["site"] == "SITE-A"
    assert pools["small"]["use"]["holds"] + pools["big"]["use"]["holds"] == 6
