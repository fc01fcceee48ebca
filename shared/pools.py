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
[pools.limits]                # per request
cores = 16
memory_gib = 64
duration_s = 14400
[pools.transfer]              # seconds per GB from a source site to this pool
JPSRC_STORM = 2.0
[[pools.costs]]
kind = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/costs/simple-minmax-float-cost.yaml"
type = "urn:ivoa:calycopis:cost:monetary"
min = 0.1
max = 0.2
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared import subjects
from shared.settings import Settings


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
    costs: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list)

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
            )
        ]
    )


def load_pools(settings: Settings, path: Path | None = None) -> PoolsConfig:
    source = path or settings.pools
    if source is None:
        return builtin_pools(settings)
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
