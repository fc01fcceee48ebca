"""Costs and metrics where users look for them: on the offered session and its compute component
(and each storage component, where a pool prices storage), from the built-in pool and the example
pools file alike, in the schema's min/max shapes."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.offers.domain import NeedsQuote, OfferPolicy, build_offerset, decide_request
from services.offers.platforms import pool_choices
from shared.auth import owners
from shared.messages import Hold
from shared.models import (
    JUPYTER_NOTEBOOK_KIND,
    SIMPLE_MINMAX_FLOAT_COST_KIND,
    SIMPLE_MINMAX_FLOAT_METRIC_KIND,
    SIMPLE_STORAGE_KIND,
    OfferSetResponse,
    SimpleMinMaxFloatCost,
    SimpleMinMaxFloatMetric,
    to_jsonable,
)
from shared.pools import COMPUTE_PERFORMANCE, MONETARY_COST, PoolsConfig, PoolsConfigError, load_pools
from shared.settings import Settings
from tests.schema_validation import requires_schemas, validate_against
from tests.unit.offers_policy import NOW, POLICY

ALICE = "local:alice"
EXAMPLE_POOLS = Path(__file__).resolve().parents[2] / "shared" / "examples" / "pools.toml"
SESSION = "0f6c1c4e-5d0e-4b7c-9a35-9d2b4c0f6a11"
REQUEST = {
    "executable": {"kind": JUPYTER_NOTEBOOK_KIND, "location": "https://example.org/hello.ipynb"},
    "storage": [{"kind": SIMPLE_STORAGE_KIND, "meta": {"name": "scratch"}, "size": {"min": 2}}],
}


def policy_of(config: PoolsConfig) -> OfferPolicy:
    # The local platform runs code only for the pool's allowed owners: alice is one.
    pools = [pool.model_copy(update={"allowed_owners": [ALICE]}) for pool in config.pools]
    return replace(POLICY, pool=config.pools[0].name, pools=pool_choices(pools))


def offered(config: PoolsConfig) -> OfferSetResponse:
    policy = policy_of(config)
    decision = decide_request(json.dumps(REQUEST).encode(), "r1", owners.parse(ALICE).token, NOW, policy)
    assert isinstance(decision, NeedsQuote), decision
    start = datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    hold = Hold(
        session_id=SESSION,
        pool=config.pools[0].name,
        start=start,
        end=start + timedelta(hours=1),
        cores=2,
        memory_gib=4,
        prepare_s=2,
    )
    return build_offerset("r1", decision.request, [hold], [], NOW + timedelta(minutes=5), NOW, policy)


def builtin() -> PoolsConfig:
    return load_pools(Settings(pools=None))


def example() -> PoolsConfig:
    return load_pools(Settings(), EXAMPLE_POOLS)


def monetary(costs: list[SimpleMinMaxFloatCost] | None) -> SimpleMinMaxFloatCost:
    found = [c for c in costs or [] if c.type == MONETARY_COST]
    assert len(found) == 1, costs
    cost = found[0]
    assert cost.kind == SIMPLE_MINMAX_FLOAT_COST_KIND
    assert cost.min is not None and cost.max is not None and 0 <= cost.min <= cost.max
    return cost


def performance(metrics: list[SimpleMinMaxFloatMetric] | None) -> SimpleMinMaxFloatMetric:
    found = [m for m in metrics or [] if m.type == COMPUTE_PERFORMANCE]
    assert len(found) == 1, metrics
    metric = found[0]
    assert metric.kind == SIMPLE_MINMAX_FLOAT_METRIC_KIND
    assert metric.min is not None and metric.max is not None and 0 < metric.min <= metric.max
    return metric


@pytest.mark.parametrize("pools", [builtin, example], ids=["built-in pool", "example pools file"])
def test_an_offer_carries_a_cost_and_a_metric_on_the_session_and_on_compute(pools: Any) -> None:
    offerset = offered(pools())
    (offer,) = offerset.offers or []
    assert offer.compute is not None
    assert monetary(offer.costs) == monetary(offer.compute.costs)
    assert performance(offer.metrics) == performance(offer.compute.metrics)


def test_the_example_pools_file_prices_each_storage_component() -> None:
    (offer,) = offered(example()).offers or []
    (scratch,) = offer.storage or []
    cost = monetary(scratch.costs)
    assert cost.description and "storage" in cost.description
    assert cost != monetary(offer.costs)


def test_the_built_in_pool_prices_no_storage_and_leaves_it_as_asked() -> None:
    (offer,) = offered(builtin()).offers or []
    (scratch,) = offer.storage or []
    assert scratch.costs is None


def test_a_pool_without_costs_or_metrics_offers_none(tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    path.write_text('[[pools]]\nname = "bare"\nplatform = "local"\ncores = 4\nmemory_gib = 8\n')
    (offer,) = offered(load_pools(Settings(), path)).offers or []
    assert offer.compute is not None
    assert (offer.costs, offer.metrics, offer.compute.costs, offer.compute.metrics) == (None,) * 4


@requires_schemas
@pytest.mark.parametrize("pools", [builtin, example], ids=["built-in pool", "example pools file"])
def test_offers_with_costs_and_metrics_conform_to_the_schema(pools: Any) -> None:
    validate_against("OfferSetResponse", to_jsonable(offered(pools())))


@pytest.mark.parametrize(
    "entry",
    [
        'kind = "urn:not-a-cost-kind"\nmin = 1.0',
        f'kind = "{SIMPLE_MINMAX_FLOAT_COST_KIND}"\nmin = "cheap"',
        f'kind = "{SIMPLE_MINMAX_FLOAT_COST_KIND}"\nmax = inf',
        f'kind = "{SIMPLE_MINMAX_FLOAT_COST_KIND}"\nmax = 1e300',
    ],
)
@pytest.mark.parametrize("table", ["costs", "storage_costs"])
def test_a_bad_cost_in_a_pools_file_is_refused_at_start(tmp_path: Path, entry: str, table: str) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(
        f'[[pools]]\nname = "p"\nplatform = "local"\ncores = 1\nmemory_gib = 1\n[[pools.{table}]]\n{entry}\n'
    )
    with pytest.raises(PoolsConfigError, match=table):
        load_pools(Settings(), path)


def test_a_bad_metric_in_a_pools_file_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "pools.toml"
    path.write_text(
        '[[pools]]\nname = "p"\nplatform = "local"\ncores = 1\nmemory_gib = 1\n'
        f'[[pools.metrics]]\nkind = "{SIMPLE_MINMAX_FLOAT_COST_KIND}"\nmin = 1.0\n'
    )
    with pytest.raises(PoolsConfigError, match="metrics"):
        load_pools(Settings(), path)


@pytest.mark.parametrize("path", ["README.md", "shared/pools.py"])
def test_the_documented_pools_examples_load(path: str) -> None:
    text = (Path(__file__).resolve().parents[2] / path).read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[pools]]" in b]
    assert blocks, path
    for block in blocks:
        (pool,) = PoolsConfig.model_validate(tomllib.loads(block)).pools
        assert pool.allow_privileged is False and pool.limits.storage_gib == 500
        assert monetary([SimpleMinMaxFloatCost.model_validate(c) for c in pool.costs])
