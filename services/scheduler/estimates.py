"""Data-lake-aware preparation estimates (execution-broker.md §5.2-5.3, §4.7 Example C).

Pure: no I/O, no clock. The scheduler extracts the data needs of a request (`data_needs`), fills in
replicas it must look up (`services.scheduler.rucio.resolve_needs`), and asks for an estimate per pool
(`estimate_preparation`). "The more remote the data, the later the start."

Units and rules (documented once, used everywhere here):

* **GB means GiB** (2**30 bytes), rounded **up** to whole GB, minimum 1 per item — the prototype's
  rounding, and what makes §4.7 C come out right (25 GiB x 2 s/GB + 60 s = 110 s; 25 MiB → 1 GB).
* A **Rucio/SRCNet item** (one with replicas, i.e. RSE names) costs, from its best replica,
  `rate(source, pool site) x GB + staging_delay_s` (the Rucio rule delay, 60 s). The best replica is
  the one with the lowest estimate.
* A **replica at the pool's own site** (same site after `rse_sites` mapping) has rate 0 but still
  pays `local_staging_s` (default: the same rule delay), because even local data has to be made
  visible to the compute area by a rule or a `prepare_data` call. Set `local_staging_s=0` to follow
  launcher-targets.md §4.5 ("staging is 0 when co-located") literally.
* A **learned estimate** for (source, pool name), once it has `min_samples` measurements, replaces
  the computed estimate of that replica (it is the measured truth for that route).
* An **ivo:// data product** (an IVOA or SKAO item whose ivoid is `ivo://<authority>/<path>?<scope>:<name>`)
  is the Rucio DID `scope:name`, and costs exactly what that Rucio item costs.
* A **remote HTTP item** (simple, S3, or IVOA data that names no DID: no RSE) has no site: it costs
  `remote_rate_s_per_gb x GB` when its size is known (IVOA datalink `content_length`), else the flat
  `remote_flat_s`. A learned estimate under the source key `REMOTE_SOURCE` replaces either.
* An item with **neither a usable replica nor a size** (e.g. a Rucio DID that could not be resolved)
  costs the pessimistic `unknown_item_s` (10 min), with a reason: a late start is safer than a
  start before the data is there.
* Data items stage **in parallel**: total = `base_prepare_s` + max over items (0 with no data).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from shared.models.data_products import NotADataProduct, data_product_did
from shared.models.kinds import (
    IVOA_DATA_KIND,
    RUCIO_DATA_KIND,
    S3_DATA_KIND,
    SIMPLE_DATA_KIND,
    SKAO_DATA_KIND,
    normalise_kind,
)
from shared.models.limits import MAX_BYTES

GIB = 2**30
#: Source key under which learned estimates of remote HTTP items (no RSE) are kept.
REMOTE_SOURCE = "remote-http"
#: The Rucio rule delay of the prototype (`ResponseTimes rucio.replica.delay`).
DEFAULT_STAGING_DELAY_S = 60.0


# -- the data needs of a request -------------------------------------------------------------------


@dataclass(frozen=True)
class DataNeed:
    """One data item of a request, as far as preparation time is concerned.

    `replicas` are RSE (or site) names; empty for remote HTTP data and for Rucio DIDs not yet resolved.
    `scope`/`object_name` identify a DID that `resolve_needs` can look up (Rucio and SKAO items).
    """

    name: str
    size_bytes: int | None
    replicas: tuple[str, ...]
    kind: str
    scope: str | None = None
    object_name: str | None = None
    #: The identifier that named the DID (an ivo:// data product), for messages; None otherwise.
    origin: str | None = None

    @property
    def did(self) -> str | None:
        """`scope:name`, or None when this item is not a DID."""
        if self.scope and self.object_name:
            return f"{self.scope}:{self.object_name}"
        return None

    @property
    def remote_http(self) -> bool:
        """True for data fetched from a URL (simple, S3, an IVOA item that names no DID): no RSE, no
        Rucio rule. An IVOA item whose ivoid names a DID is Rucio data."""
        if self.kind == IVOA_DATA_KIND:
            return self.did is None
        return self.kind not in (RUCIO_DATA_KIND, SKAO_DATA_KIND)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _size(value: Any) -> int | None:
    # bool is an int; a negative size is nonsense: both mean "unknown". The offers service refuses
    # sizes past MAX_BYTES; capped here all the same, so no size can overflow the float arithmetic
    # below (an int of 10**400 cannot even be divided into a float).
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return min(value, MAX_BYTES)
    return None


def _replica_names(value: Any) -> tuple[str, ...]:
    names: list[str] = []
    for item in value if isinstance(value, list) else []:
        # Bare RSE names (June 2025 examples) or {"rsename": ...} objects (schema 1.0.7).
        name = _str(item) if isinstance(item, str) else _str(_mapping(item).get("rsename"))
        if name and name not in names:
            names.append(name)
    return tuple(names)


def data_needs(data_components: Sequence[Mapping[str, Any]]) -> list[DataNeed]:
    """Extract the data needs from the request's data resources, as JSON (by alias).

    * SKAO: `skao.namespace`/`objectname` (the DID; else its `ivoa.ivoid`), `skao.datasize` (bytes),
      `skao.replicas[].rsename`;
    * Rucio: `rucio.scope`/`object` (the DID); size and replicas come from Rucio (`resolve_needs`);
    * IVOA: an ivoid `ivo://<authority>/<path>?<scope>:<name>` is the DID (as for Rucio); without
      one, no site; size from `ivoa.datalink.content_length` when given;
    * simple, S3 and anything else: no site and no size (a flat remote delay).

    Names come from `meta.name`, else `meta.uuid`, else `data-<index>`; duplicates get `#<n>`.
    """
    needs: list[DataNeed] = []
    seen: set[str] = set()
    for index, component in enumerate(data_components):
        meta = _mapping(component.get("meta"))
        name = _str(meta.get("name")) or _str(meta.get("uuid")) or f"data-{index}"
        unique, n = name, 2
        while unique in seen:
            unique, n = f"{name}#{n}", n + 1
        seen.add(unique)
        raw_kind = component.get("kind")
        kind = normalise_kind(raw_kind) if isinstance(raw_kind, str) else ""
        try:
            product = data_product_did(component)
        except NotADataProduct:
            product = None  # the offers service refuses such a request; nothing to look up here
        if kind == SKAO_DATA_KIND:
            skao = _mapping(component.get("skao"))
            needs.append(
                DataNeed(
                    name=unique,
                    size_bytes=_size(skao.get("datasize")),
                    replicas=_replica_names(skao.get("replicas")),
                    kind=kind,
                    scope=product.scope if product else _str(skao.get("namespace")),
                    object_name=product.name if product else _str(skao.get("objectname")),
                    origin=product.origin if product else None,
                )
            )
        elif kind == RUCIO_DATA_KIND:
            rucio = _mapping(component.get("rucio"))
            needs.append(
                DataNeed(
                    name=unique,
                    size_bytes=None,
                    replicas=(),
                    kind=kind,
                    scope=_str(rucio.get("scope")),
                    object_name=_str(rucio.get("object")),
                )
            )
        elif kind == IVOA_DATA_KIND:
            datalink = _mapping(_mapping(component.get("ivoa")).get("datalink"))
            needs.append(
                DataNeed(
                    name=unique,
                    size_bytes=_size(datalink.get("content_length")),
                    replicas=(),
                    kind=kind,
                    # An ivo:// data product is a Rucio DID: its replicas decide, as for Rucio data.
                    scope=product.scope if product else None,
                    object_name=product.name if product else None,
                    origin=product.origin if product else None,
                )
            )
        else:
            needs.append(
                DataNeed(
                    name=unique,
                    size_bytes=None,
                    replicas=(),
                    kind=kind or SIMPLE_DATA_KIND,
                )
            )
    return needs


# Kept importable for callers that want to branch on the same families.
REMOTE_HTTP_KINDS = frozenset({SIMPLE_DATA_KIND, S3_DATA_KIND, IVOA_DATA_KIND})


def size_gb(size_bytes: int | None) -> int:
    """Whole GB (GiB) for an estimate: rounded up, at least 1 (an unknown size counts as 1)."""
    if size_bytes is None or size_bytes <= 0:
        return 1
    # Capped: a size from Rucio is as untrusted as one from a request (10**400 / GIB overflows).
    return max(1, math.ceil(min(size_bytes, MAX_BYTES) / GIB))


# -- transfer rates --------------------------------------------------------------------------------


def _non_negative(value: float, what: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class TransferTable:
    """Seconds per GB from a source (RSE or site) to a pool site, and the fixed delays.

    Lookup order of `rate(source, destination)`: same site → 0; `rates[source][destination]`;
    `rates[source]["*"]` (a per-source rate, as the prototype's `TransferTimes(source, seconds)`);
    `default_rate_s_per_gb` (None: unknown, that replica is not a candidate).
    `rse_sites` maps RSE names to site names (e.g. `AUSRC_STORM` → `AUSRC`) for the same-site test;
    an RSE absent from it is its own site.
    """

    rates: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    default_rate_s_per_gb: float | None = None
    staging_delay_s: float = DEFAULT_STAGING_DELAY_S
    #: Cost of a replica at the pool's own site; None: the same as `staging_delay_s`.
    local_staging_s: float | None = None
    rse_sites: Mapping[str, str] = field(default_factory=dict)
    remote_rate_s_per_gb: float = 4.0
    remote_flat_s: float = 30.0
    unknown_item_s: float = 600.0

    def __post_init__(self) -> None:
        for source, row in self.rates.items():
            for destination, value in row.items():
                _non_negative(value, f"the rate {source} → {destination}")
        if self.default_rate_s_per_gb is not None:
            _non_negative(self.default_rate_s_per_gb, "default_rate_s_per_gb")
        _non_negative(self.staging_delay_s, "staging_delay_s")
        if self.local_staging_s is not None:
            _non_negative(self.local_staging_s, "local_staging_s")
        _non_negative(self.remote_rate_s_per_gb, "remote_rate_s_per_gb")
        _non_negative(self.remote_flat_s, "remote_flat_s")
        _non_negative(self.unknown_item_s, "unknown_item_s")

    @classmethod
    def from_mapping(
        cls,
        rates: Mapping[str, Mapping[str, float] | float],
        *,
        default: float | None = None,
        **options: Any,
    ) -> TransferTable:
        """`{"JPSRC_STORM": {"UKSRC-RAL": 2.0, "*": 3.0}, "AUSRC_STORM": 0.0}` (a bare number is "*").

        `options` are the other fields (`staging_delay_s`, `rse_sites`, `remote_flat_s`, ...).
        """
        table: dict[str, dict[str, float]] = {}
        for source, row in rates.items():
            if isinstance(row, Mapping):
                table[source] = {dest: float(value) for dest, value in row.items()}
            else:
                table[source] = {"*": float(row)}
        return cls(rates=table, default_rate_s_per_gb=default, **options)

    def site_of(self, rse: str) -> str:
        return self.rse_sites.get(rse, rse)

    def same_site(self, source: str, destination: str) -> bool:
        return self.site_of(source) == destination or source == destination

    def rate(self, source: str, destination: str) -> float | None:
        if self.same_site(source, destination):
            return 0.0
        row = self.rates.get(source, {})
        if destination in row:
            return row[destination]
        if "*" in row:
            return row["*"]
        return self.default_rate_s_per_gb

    def replica_seconds(self, source: str, destination: str, size_bytes: int | None) -> float | None:
        """Computed estimate of staging one item from `source` to a pool at `destination`."""
        if self.same_site(source, destination):
            local = self.staging_delay_s if self.local_staging_s is None else self.local_staging_s
            return local
        rate = self.rate(source, destination)
        if rate is None:
            return None
        return rate * size_gb(size_bytes) + self.staging_delay_s


# -- learned estimates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LearnedEstimates:
    """Measured preparation seconds per (source, pool name): the last `window` samples per key.

    Immutable: `record` returns a new value (the scheduler keeps the latest and persists `to_dict()`).
    `estimate` is the median of the kept samples once there are at least `min_samples`, else None.
    """

    samples: Mapping[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)
    window: int = 20
    min_samples: int = 3

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_samples < 1:
            raise ValueError("window and min_samples must be at least 1")

    def record(self, source: str, pool: str, seconds: float) -> LearnedEstimates:
        _non_negative(seconds, "a measured preparation time")
        key = (source, pool)
        kept = (*self.samples.get(key, ()), float(seconds))[-self.window :]
        return replace(self, samples={**self.samples, key: kept})

    def count(self, source: str, pool: str) -> int:
        return len(self.samples.get((source, pool), ()))

    def estimate(self, source: str, pool: str) -> float | None:
        kept = self.samples.get((source, pool), ())
        if len(kept) < self.min_samples:
            return None
        return float(statistics.median(kept))

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "min_samples": self.min_samples,
            "samples": [
                {"source": source, "pool": pool, "seconds": list(values)}
                for (source, pool), values in sorted(self.samples.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedEstimates:
        window = int(data.get("window", 20))
        samples: dict[tuple[str, str], tuple[float, ...]] = {}
        for row in data.get("samples", []):
            values = tuple(_non_negative(float(v), "a stored sample") for v in row["seconds"])
            samples[(str(row["source"]), str(row["pool"]))] = values[-window:]
        return cls(samples=samples, window=window, min_samples=int(data.get("min_samples", 3)))


# -- the estimate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemEstimate:
    """One data item: the chosen source (an RSE, or None for remote HTTP / unknown), its seconds,
    and whether the seconds came from measurements."""

    source: str | None
    seconds: float
    learned: bool


@dataclass(frozen=True)
class PreparationEstimate:
    total_s: float
    per_item: dict[str, ItemEstimate]
    reasons: list[str]

    @property
    def data_s(self) -> float:
        """The data part of the total (the slowest item)."""
        return max((item.seconds for item in self.per_item.values()), default=0.0)


def _fmt(seconds: float) -> str:
    return f"{seconds:g} s"


def _estimate_item(
    need: DataNeed, pool_site: str, pool_name: str, table: TransferTable, learned: LearnedEstimates
) -> tuple[ItemEstimate, str]:
    if need.replicas:
        best: tuple[float, int, ItemEstimate] | None = None
        for order, rse in enumerate(need.replicas):
            measured = learned.estimate(rse, pool_name)
            if measured is not None:
                candidate = ItemEstimate(rse, measured, True)
            else:
                computed = table.replica_seconds(rse, pool_site, need.size_bytes)
                if computed is None:
                    continue
                candidate = ItemEstimate(rse, computed, False)
            # Lowest seconds wins; ties go to the replica listed first (deterministic).
            if best is None or (candidate.seconds, order) < best[:2]:
                best = (candidate.seconds, order, candidate)
        if best is not None:
            item = best[2]
            how = (
                "measured"
                if item.learned
                else (
                    "at the pool's site"
                    if table.same_site(item.source or "", pool_site)
                    else f"{size_gb(need.size_bytes)} GB at {table.rate(item.source or '', pool_site):g} s/GB"
                    f" + {_fmt(table.staging_delay_s)} staging"
                )
            )
            note = f"{need.name}: {_fmt(item.seconds)} from {item.source} ({how})"
            if need.size_bytes is None and not item.learned:
                note += "; size unknown, counted as 1 GB"
            return item, note
        return (
            ItemEstimate(None, table.unknown_item_s, False),
            f"{need.name}: no transfer rate known from {', '.join(need.replicas)} to {pool_site}; "
            f"assumed {_fmt(table.unknown_item_s)}",
        )
    if need.remote_http:
        measured = learned.estimate(REMOTE_SOURCE, pool_name)
        if measured is not None:
            return ItemEstimate(None, measured, True), f"{need.name}: {_fmt(measured)} (measured download)"
        if need.size_bytes is not None:
            seconds = table.remote_rate_s_per_gb * size_gb(need.size_bytes)
            return ItemEstimate(None, seconds, False), (
                f"{need.name}: {_fmt(seconds)} download ({size_gb(need.size_bytes)} GB at "
                f"{table.remote_rate_s_per_gb:g} s/GB)"
            )
        return ItemEstimate(None, table.remote_flat_s, False), (
            f"{need.name}: {_fmt(table.remote_flat_s)} download (size unknown)"
        )
    what = f"{need.did}" if need.did else "it"
    return ItemEstimate(None, table.unknown_item_s, False), (
        f"{need.name}: no replica known for {what}; assumed {_fmt(table.unknown_item_s)}"
    )


def estimate_preparation(
    needs: Iterable[DataNeed],
    pool_site: str,
    pool_name: str,
    table: TransferTable,
    learned: LearnedEstimates,
    base_prepare_s: float,
) -> PreparationEstimate:
    """Preparation seconds of a session on one pool: `base_prepare_s` + the slowest data item.

    `reasons` has one human line per item (for logs, offer descriptions and NO messages).
    """
    _non_negative(base_prepare_s, "base_prepare_s")
    per_item: dict[str, ItemEstimate] = {}
    reasons: list[str] = []
    for need in needs:
        item, reason = _estimate_item(need, pool_site, pool_name, table, learned)
        per_item[need.name] = item
        reasons.append(reason)
    data_s = max((item.seconds for item in per_item.values()), default=0.0)
    return PreparationEstimate(total_s=base_prepare_s + data_s, per_item=per_item, reasons=reasons)
