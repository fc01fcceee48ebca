"""Resource pools: what each scheduler pool offers, read from a TOML file (``EB_POOLS``).

Without a file there is one built-in ``local`` pool: this machine's cores and memory on the local
platform. The offers, scheduler and launcher services read the same file, so they agree on which
pools exist, which platform runs each, and what it costs.

```toml
[[pools]]
name = "uksrc-canfar"         # a subject token: letters, digits, _ -
platform = "canfar"           # an installed plugin of the execution_broker.platforms group
site = "UKSRC-RAL"            # the SRCNet RSE name (data locality)
cores = 64
memory_gib = 256
storage_gib = 2000
grid_s = 60                   # offers start on this grid
prepare_s = 30                # base preparation before data staging
allowed_owners = []           # for a platform that runs code on this host (local): who may use it
allowed_paths = []            # local folders notebooks and data may be read from (local platform)
allowed_hosts = []            # hosts in private/loopback ranges that http(s) locations may name
allow_privileged = false      # true: offer privileged containers (no built-in platform runs them)
[pools.limits]                # per request
cores = 16
memory_gib = 64
storage_gib = 500             # a request whose storage minimums add up to more gets NO
duration_s = 14400
[pools.transfer]              # seconds per GB from a source site to this pool
JPSRC_STORM = 2.0
[[pools.costs]]               # on every offered session and its compute component
kind = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/costs/simple-minmax-float-cost.yaml"
type = "urn:ivoa:calycopis:cost:monetary"
min = 0.1
max = 0.2
[[pools.metrics]]
kind = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/metrics/simple-minmax-float-metric.yaml"
type = "urn:ivoa:calycopis:metric:compute-performance"
min = 1.0
max = 1.5
[[pools.storage_costs]]       # on each offered storage component
kind = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/costs/simple-minmax-float-cost.yaml"
type = "urn:ivoa:calycopis:cost:monetary"
min = 0.01
max = 0.01
```

Without a file, the built-in pool declares a monetary cost of 0 and a compute-performance metric of
1.0 (`BUILTIN_COSTS`, `BUILTIN_METRICS`), so its offers carry both too.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator

from shared import subjects
from shared.auth import owners
from shared.models import (
    SIMPLE_MINMAX_FLOAT_COST_KIND,
    SIMPLE_MINMAX_FLOAT_METRIC_KIND,
    SimpleMinMaxFloatCost,
    SimpleMinMaxFloatMetric,
)
from shared.settings import Settings

#: What the built-in pool declares, so that its offers carry a cost and a metric out of the box (on
#: the session and on its compute): running on the broker's own machine costs no money, and its
#: cores are the reference of the relative performance metric. A pools file declares its own.
MONETARY_COST: Final = "urn:ivoa:calycopis:cost:monetary"
COMPUTE_PERFORMANCE: Final = "urn:ivoa:calycopis:metric:compute-performance"
BUILTIN_COSTS: Final[tuple[dict[str, Any], ...]] = (
    {
        "kind": SIMPLE_MINMAX_FLOAT_COST_KIND,
        "type": MONETARY_COST,
        "description": "Monetary cost of the session: this machine charges nothing",
        "min": 0.0,
        "max": 0.0,
    },
)
BUILTIN_METRICS: Final[tuple[dict[str, Any], ...]] = (
    {
        "kind": SIMPLE_MINMAX_FLOAT_METRIC_KIND,
        "type": COMPUTE_PERFORMANCE,
        "description": "Relative performance per core: 1.0 is a core of this machine",
        "min": 1.0,
        "max": 1.0,
    },
)


class PoolLimits(BaseModel):
    """Per-request limits; None means the pool's whole capacity."""

    model_config = ConfigDict(extra="forbid")

    cores: int | None = None
    memory_gib: int | None = None
    storage_gib: int | None = None
    duration_s: int = 24 * 3600


class Pool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    platform: str
    site: str = "local"
    cores: int = Field(ge=1)
    memory_gib: int = Field(ge=1)
    storage_gib: int = Field(default=1000, ge=0)
    grid_s: int = Field(default=60, ge=1)
    prepare_s: int = Field(default=2, ge=0)
    max_offers: int = Field(default=4, ge=1)
    default_duration_s: int = Field(default=7200, ge=1)
    default_window_s: int = Field(default=7200, ge=0)
    staging_delay_s: float = Field(default=60.0, ge=0)
    default_transfer_s_per_gb: float = Field(default=4.0, ge=0)
    limits: PoolLimits = Field(default_factory=PoolLimits)
    transfer: dict[str, float] = Field(default_factory=dict)
    # Shown on every offered session and on its compute component (the schema's min/max shapes).
    costs: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    # Shown on each storage component offered, when the pool prices storage.
    storage_costs: list[dict[str, Any]] = Field(default_factory=list)
    # Containers asking `privileged: true` get NO at offer time unless this is true: every built-in
    # platform refuses them at launch, so only a plugin that runs them should set it.
    # Strict: a security switch is turned on by `true` only, never by "yes" or 1.
    allow_privileged: Annotated[bool, Strict()] = False
    # A platform that runs user code on the broker's own host (the local platform) runs it only for
    # these owners ("local:alice", "oidc:<issuer hash>:<sub>"); empty: for nobody.
    allowed_owners: list[str] = Field(default_factory=list)
    # Local folders that notebook and data locations (file: URLs, paths) may name; empty: none.
    allowed_paths: list[Path] = Field(default_factory=list)
    # Hosts whose addresses are loopback, private or link-local that http(s) locations may still name.
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("costs", "storage_costs")
    @classmethod
    def _costs(cls, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Checked at start, as the wire model reads them: a bad cost must not first show as an offer
        # set that cannot be built.
        return [
            SimpleMinMaxFloatCost.model_validate(v).model_dump(mode="json", exclude_none=True) for v in values
        ]

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            SimpleMinMaxFloatMetric.model_validate(v).model_dump(mode="json", exclude_none=True)
            for v in values
        ]

    @field_validator("allowed_owners")
    @classmethod
    def _owners(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                owners.parse(value)
            except owners.OwnerError as exc:
                raise ValueError(f"allowed_owners: {value!r} is not an owner: {exc}") from None
        return values

    @field_validator("allowed_paths")
    @classmethod
    def _absolute(cls, values: list[Path]) -> list[Path]:
        for value in values:
            if not value.is_absolute():
                raise ValueError(f"allowed_paths: {str(value)!r} must be an absolute path")
        return values

    def allowed_owner_tokens(self) -> frozenset[str]:
        """The allowed owners as the subject tokens requests carry."""
        return frozenset(owners.parse(owner).token for owner in self.allowed_owners)

    @field_validator("name", "platform")
    @classmethod
    def _token(cls, value: str) -> str:
        if not subjects.is_token(value):
            raise ValueError(f"{value!r} must be a single subject token (letters, digits, _ - = @)")
        return value


class PoolsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[Pool] = Field(min_length=1)
    rucio_url: str | None = None

    @field_validator("pools")
    @classmethod
    def _unique(cls, pools: list[Pool]) -> list[Pool]:
        names = [p.name for p in pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique: {names}")
        return pools

    def get(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)

    def platforms(self) -> list[str]:
        return sorted({p.platform for p in self.pools})


class PoolsConfigError(ValueError):
    pass


def builtin_pools(settings: Settings) -> PoolsConfig:
    """One pool on this machine; a 1 s grid so a local session starts as soon as it is accepted."""
    return PoolsConfig(
        pools=[
            Pool(
                name=settings.pool_name,
                platform=settings.pool_platform,
                site="local",
                cores=settings.pool_cores,
                memory_gib=settings.pool_memory_gib,
                storage_gib=settings.pool_storage_gib,
                grid_s=settings.pool_grid_s,
                prepare_s=settings.pool_prepare_s,
                max_offers=settings.max_offers,
                default_duration_s=settings.default_duration_s,
                default_window_s=settings.default_window_s,
                allowed_owners=_listed(settings.pool_allowed_owners),
                allowed_paths=[Path(p) for p in _listed(settings.pool_allowed_paths)],
                allowed_hosts=_listed(settings.pool_allowed_hosts),
                costs=list(BUILTIN_COSTS),
                metrics=list(BUILTIN_METRICS),
            )
        ]
    )


def _listed(value: str) -> list[str]:
    """A comma-separated setting as its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


def load_pools(settings: Settings, path: Path | None = None) -> PoolsConfig:
    source = path or settings.pools
    if source is None:
        try:
            return builtin_pools(settings)
        except ValueError as exc:
            raise PoolsConfigError(f"the built-in pool's settings (EB_POOL_*) are not valid: {exc}") from None
    try:
        with source.open("rb") as handle:
            document = tomllib.load(handle)
        return PoolsConfig.model_validate(document)
    except FileNotFoundError:
        raise PoolsConfigError(f"the pools file {source} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise PoolsConfigError(f"the pools file {source} is not valid TOML: {exc}") from None
    except ValueError as exc:
        raise PoolsConfigError(f"the pools file {source} is not valid: {exc}") from None


def remote_pool_names(settings: Settings) -> frozenset[str]:
    """``EB_REMOTE_POOLS``: the pools whose scheduler and launcher run at a site."""
    return frozenset(_listed(settings.remote_pools))


def served_pools(settings: Settings) -> PoolsConfig:
    """The pools this installation's scheduler and launcher run: all of `load_pools` but those run
    at a site (``EB_REMOTE_POOLS``), which the site's own scheduler and launcher run instead."""
    config = load_pools(settings)
    remote = remote_pool_names(settings)
    here = [pool for pool in config.pools if pool.name not in remote]
    if not here:
        raise PoolsConfigError(
            "every pool runs at a site (EB_REMOTE_POOLS): this installation's scheduler and launcher "
            "would have no pool; keep at least one pool here"
        )
    return config.model_copy(update={"pools": here})
