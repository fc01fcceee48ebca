"""Preparation estimates from data locality (services/scheduler/estimates.py): pure, no I/O."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from services.scheduler.estimates import (
    GIB,
    REMOTE_SOURCE,
    DataNeed,
    LearnedEstimates,
    TransferTable,
    data_needs,
    estimate_preparation,
    size_gb,
)
from services.scheduler.rucio import ReplicaInfo, RucioLookupFailed, resolve_needs
from shared.models.kinds import IVOA_DATA_KIND, RUCIO_DATA_KIND, SIMPLE_DATA_KIND, SKAO_DATA_KIND
from shared.models.resources import SkaoDataResource

MIB = 2**20
OLD_SKAO_KIND = "https://www.purl.org/ivoa.net/EB/schema/types/data/skao-data-resource-1.0"
EXAMPLE_C = Path(__file__).parents[1] / "data" / "requests" / "example-c-skao.yaml"

# The §4.7 C placeholder rates: (ASCII(first letter) - 65) / 4 would give A 0, J 2.25, S 4.5; the
# worked example quotes AUSRC 0 s/GB and JPSRC/SPSRC 2 s/GB, a 4 s/GB for the small object.
EXAMPLE_C_TABLE = TransferTable.from_mapping(
    {"AUSRC_STORM": 0.0, "JPSRC_STORM": 2.0, "SPSRC_STORM": 2.0, "CASRC_XRD": 4.0}
)
NO_LEARNING = LearnedEstimates()


def skao(name: str, size: int | None, *replicas: str, kind: str = SKAO_DATA_KIND) -> dict[str, Any]:
    return {"kind": kind, "meta": {"name": name},
            "skao": {"namespace": "testing", "objectname": name, "datasize": size,
                     "replicas": [{"rsename": r} for r in replicas]}}


def estimate(needs: list[DataNeed], table: TransferTable = EXAMPLE_C_TABLE,
             learned: LearnedEstimates = NO_LEARNING, base: float = 0.0, site: str = "UKSRC-RAL",
             pool: str = "uk-pool") -> Any:
    return estimate_preparation(needs, site, pool, table, learned, base)


# -- data_needs ------------------------------------------------------------------------------------


def test_data_needs_reads_the_example_c_request_file() -> None:
    request = yaml.safe_load(EXAMPLE_C.read_text())
    [need] = data_needs(request["data"])
    assert need == DataNeed(
        name="zrq-test-20250509-082506", size_bytes=25_600 * GIB,
        replicas=("AUSRC_STORM", "JPSRC_STORM", "SPSRC_STORM"), kind=SKAO_DATA_KIND,
        scope="testing", object_name="zrq-test-20250509-082506",
    )
    assert need.did == "testing:zrq-test-20250509-082506"
    assert not need.remote_http


def test_data_needs_accepts_the_pydantic_dump_and_bare_replica_names() -> None:
    model = SkaoDataResource.model_validate(skao("obj", 5, "AUSRC_STORM", kind=OLD_SKAO_KIND))
    dumped = json.loads(model.model_dump_json(by_alias=True, exclude_none=True))
    bare = {"kind": OLD_SKAO_KIND, "meta": {"name": "bare"},
            "skao": {"namespace": "ns", "objectname": "o", "replicas": ["A_RSE", "B_RSE", "A_RSE"]}}
    first, second = data_needs([dumped, bare])
    assert first.replicas == ("AUSRC_STORM",) and first.size_bytes == 5
    assert second.replicas == ("A_RSE", "B_RSE") and second.size_bytes is None


def test_data_needs_for_rucio_ivoa_simple_and_odd_input() -> None:
    components: list[dict[str, Any]] = [
        {"kind": RUCIO_DATA_KIND, "meta": {"name": "r"}, "rucio": {"scope": "sc", "object": "f.fits"}},
        {"kind": IVOA_DATA_KIND, "meta": {"uuid": "u-1"}, "ivoa": {"datalink": {"content_length": 123}}},
        {"kind": SIMPLE_DATA_KIND, "location": "https://example.org/x"},
        {"kind": SIMPLE_DATA_KIND, "meta": {"name": "r"}},
        {"kind": SKAO_DATA_KIND, "meta": {"name": "neg"}, "skao": {"datasize": -5, "replicas": "nope"}},
    ]
    rucio, ivoa, simple, duplicate, odd = data_needs(components)
    assert (rucio.scope, rucio.object_name, rucio.replicas, rucio.size_bytes) == ("sc", "f.fits", (), None)
    assert ivoa.name == "u-1" and ivoa.size_bytes == 123 and ivoa.remote_http
    assert simple.name == "data-2" and simple.remote_http and simple.size_bytes is None
    assert duplicate.name == "r#2"
    assert odd.size_bytes is None and odd.replicas == () and odd.did is None


def test_size_is_whole_gib_rounded_up_with_a_minimum_of_one() -> None:
    assert size_gb(None) == 1
    assert size_gb(0) == 1
    assert size_gb(25 * MIB) == 1
    assert size_gb(GIB) == 1
    assert size_gb(GIB + 1) == 2
    assert size_gb(25_600 * GIB) == 25_600


# -- §4.7 Example C ----------------------------------------------------------------------------------


def test_example_c_best_replica_is_ausrc_and_costs_the_rule_delay() -> None:
    needs = data_needs([skao("big", 25_600 * GIB, "AUSRC_STORM", "JPSRC_STORM", "SPSRC_STORM")])
    result = estimate(needs)
    assert result.total_s == 60.0  # PT1M
    assert result.per_item["big"].source == "AUSRC_STORM"
    assert not result.per_item["big"].learned


def test_example_c_25_gib_on_jpsrc_or_spsrc_only_takes_110_s() -> None:
    needs = data_needs([skao("mid", 25 * GIB, "JPSRC_STORM", "SPSRC_STORM")])
    assert estimate(needs).per_item["mid"].seconds == 110.0  # PT1M50S


def test_example_c_small_object_rounds_up_to_one_gb() -> None:
    needs = data_needs([skao("small", 25 * MIB, "CASRC_XRD")])
    assert estimate(needs).per_item["small"].seconds == 64.0  # PT1M4S


def test_example_c_session_takes_the_maximum_and_adds_the_base() -> None:
    needs = data_needs([
        skao("big", 25_600 * GIB, "AUSRC_STORM", "JPSRC_STORM", "SPSRC_STORM"),
        skao("mid", 25 * GIB, "JPSRC_STORM", "SPSRC_STORM"),
        skao("small", 25 * MIB, "CASRC_XRD"),
    ])
    result = estimate(needs)
    assert result.total_s == 110.0
    assert [round(i.seconds) for i in result.per_item.values()] == [60, 110, 64]
    assert len(result.reasons) == 3 and "mid: 110 s from JPSRC_STORM" in result.reasons[1]
    assert estimate(needs, base=15.0).total_s == 125.0


# -- sites, defaults ---------------------------------------------------------------------------------


def test_replica_at_the_pool_site_costs_only_local_staging() -> None:
    table = TransferTable.from_mapping({"UKSRC_RAL_XRD": 9.0}, rse_sites={"UKSRC_RAL_XRD": "UKSRC-RAL"})
    needs = [DataNeed("d", 500 * GIB, ("UKSRC_RAL_XRD",), SKAO_DATA_KIND)]
    assert estimate(needs, table).total_s == 60.0
    assert estimate(needs, table, site="ESPSRC").total_s == 9.0 * 500 + 60
    free = TransferTable.from_mapping({}, rse_sites={"UKSRC_RAL_XRD": "UKSRC-RAL"}, local_staging_s=0.0)
    assert estimate(needs, free).total_s == 0.0


def test_pair_rate_beats_per_source_rate_and_default_covers_the_rest() -> None:
    table = TransferTable.from_mapping({"JP": {"UK": 1.0, "*": 3.0}}, default=5.0, staging_delay_s=10.0)
    assert table.rate("JP", "UK") == 1.0
    assert table.rate("JP", "ES") == 3.0
    assert table.rate("AU", "UK") == 5.0
    assert table.rate("UK", "UK") == 0.0
    assert TransferTable().rate("AU", "UK") is None


def test_replicas_without_any_known_rate_fall_back_to_the_unknown_default() -> None:
    needs = [DataNeed("d", GIB, ("MARS_RSE",), SKAO_DATA_KIND)]
    result = estimate(needs, TransferTable(unknown_item_s=600.0))
    assert result.total_s == 600.0 and result.per_item["d"].source is None
    assert "no transfer rate known from MARS_RSE" in result.reasons[0]


def test_unresolved_did_and_remote_http_items() -> None:
    table = TransferTable(remote_rate_s_per_gb=4.0, remote_flat_s=30.0, unknown_item_s=600.0)
    unresolved = DataNeed("r", None, (), RUCIO_DATA_KIND, "sc", "f")
    http_sized = DataNeed("i", 3 * GIB, (), IVOA_DATA_KIND)
    http_unsized = DataNeed("s", None, (), SIMPLE_DATA_KIND)
    result = estimate([unresolved, http_sized, http_unsized], table)
    assert result.per_item["r"].seconds == 600.0 and "sc:f" in result.reasons[0]
    assert result.per_item["i"].seconds == 12.0
    assert result.per_item["s"].seconds == 30.0
    assert result.total_s == 600.0


def test_no_data_means_only_the_base() -> None:
    result = estimate([], base=7.5)
    assert result.total_s == 7.5 and result.per_item == {} and result.data_s == 0.0


def test_invalid_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        TransferTable.from_mapping({"A": -1.0})
    with pytest.raises(ValueError):
        TransferTable(staging_delay_s=float("nan"))
    with pytest.raises(ValueError):
        estimate([], base=-1.0)
    with pytest.raises(ValueError):
        LearnedEstimates().record("A", "p", -3.0)


# -- learned estimates -----------------------------------------------------------------------------


def test_learned_estimates_need_min_samples_and_keep_a_window() -> None:
    learned = LearnedEstimates(window=4, min_samples=3)
    learned = learned.record("A", "p", 10).record("A", "p", 20)
    assert learned.estimate("A", "p") is None
    learned = learned.record("A", "p", 300)
    assert learned.estimate("A", "p") == 20.0
    for value in (1, 2, 3, 4):
        learned = learned.record("A", "p", value)
    assert learned.count("A", "p") == 4
    assert learned.estimate("A", "p") == 2.5
    assert learned.estimate("A", "other-pool") is None


def test_record_returns_a_new_value_and_round_trips_through_json() -> None:
    empty = LearnedEstimates()
    one = empty.record("A", "p", 5)
    assert empty.count("A", "p") == 0 and one.count("A", "p") == 1
    learned = one.record("A", "p", 6).record("B", "q", 7)
    restored = LearnedEstimates.from_dict(json.loads(json.dumps(learned.to_dict())))
    assert restored == learned


def test_learned_estimates_shift_the_result_once_there_are_enough_samples() -> None:
    needs = data_needs([skao("mid", 25 * GIB, "JPSRC_STORM", "SPSRC_STORM")])
    learned = LearnedEstimates(min_samples=3)
    for seconds in (30.0, 40.0):
        learned = learned.record("SPSRC_STORM", "uk-pool", seconds)
        assert estimate(needs, learned=learned).total_s == 110.0  # not enough samples yet
    learned = learned.record("SPSRC_STORM", "uk-pool", 35.0)
    result = estimate(needs, learned=learned)
    assert result.total_s == 35.0
    assert result.per_item["mid"].source == "SPSRC_STORM" and result.per_item["mid"].learned
    # The measurements are per pool: another pool still gets the computed estimate.
    assert estimate(needs, learned=learned, pool="es-pool").total_s == 110.0
    # Slow measurements can make a replica lose to the computed estimate of another.
    slow = LearnedEstimates()
    for _ in range(3):
        slow = slow.record("JPSRC_STORM", "uk-pool", 500.0)
    result = estimate(needs, learned=slow)
    assert result.total_s == 110.0 and result.per_item["mid"].source == "SPSRC_STORM"


def test_learned_remote_downloads() -> None:
    learned = LearnedEstimates(min_samples=1).record(REMOTE_SOURCE, "uk-pool", 3.0)
    result = estimate([DataNeed("s", None, (), SIMPLE_DATA_KIND)], learned=learned)
    assert result.total_s == 3.0 and result.per_item["s"].learned


# -- properties ------------------------------------------------------------------------------------

RSES = ("AU_RSE", "JP_RSE", "SP_RSE", "UK_RSE")
rates = st.floats(min_value=0, max_value=100, allow_nan=False)
need_strategy = st.builds(
    DataNeed,
    name=st.text(alphabet="abcdef", min_size=1, max_size=4),
    size_bytes=st.one_of(st.none(), st.integers(min_value=0, max_value=10**14)),
    replicas=st.lists(st.sampled_from(RSES), unique=True, max_size=4).map(tuple),
    kind=st.sampled_from([SKAO_DATA_KIND, RUCIO_DATA_KIND, SIMPLE_DATA_KIND, IVOA_DATA_KIND]),
)


def _unique(needs: list[DataNeed]) -> list[DataNeed]:
    return [DataNeed(f"{i}-{n.name}", n.size_bytes, n.replicas, n.kind) for i, n in enumerate(needs)]


@given(
    needs=st.lists(need_strategy, max_size=5).map(_unique),
    table_rates=st.fixed_dictionaries({rse: rates for rse in RSES}),
    bumped=st.sampled_from(RSES),
    extra=st.floats(min_value=0, max_value=50, allow_nan=False),
    base=st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_more_remote_data_never_starts_earlier(
    needs: list[DataNeed], table_rates: dict[str, float], bumped: str, extra: float, base: float
) -> None:
    near = TransferTable.from_mapping(dict(table_rates))
    far = TransferTable.from_mapping({**table_rates, bumped: table_rates[bumped] + extra})
    near_result = estimate_preparation(needs, "ES", "pool", near, NO_LEARNING, base)
    far_result = estimate_preparation(needs, "ES", "pool", far, NO_LEARNING, base)
    assert far_result.total_s >= near_result.total_s
    # Total ≥ each item, and ≥ the base; deterministic.
    for item in near_result.per_item.values():
        assert near_result.total_s >= item.seconds
    assert near_result.total_s >= base
    assert estimate_preparation(needs, "ES", "pool", near, NO_LEARNING, base) == near_result


@given(needs=st.lists(need_strategy, max_size=5).map(_unique), order=st.randoms(use_true_random=False))
def test_the_total_does_not_depend_on_the_order_of_the_items(needs: list[DataNeed], order: Any) -> None:
    table = TransferTable.from_mapping({"AU_RSE": 0.5, "JP_RSE": 2.0}, default=3.0)
    shuffled = list(needs)
    order.shuffle(shuffled)
    first = estimate_preparation(needs, "UK_RSE", "pool", table, NO_LEARNING, 1.0)
    second = estimate_preparation(shuffled, "UK_RSE", "pool", table, NO_LEARNING, 1.0)
    assert first.total_s == second.total_s


# -- resolve_needs with a stand-in client ----------------------------------------------------------


class StubRucio:
    def __init__(self, answers: dict[tuple[str, str], ReplicaInfo | RucioLookupFailed]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def replicas(self, scope: str, name: str) -> ReplicaInfo:
        self.calls.append((scope, name))
        answer = self.answers[(scope, name)]
        if isinstance(answer, RucioLookupFailed):
            raise answer
        return answer


async def test_resolve_needs_fills_replicas_and_reports_problems() -> None:
    needs = [
        DataNeed("a", None, (), RUCIO_DATA_KIND, "sc", "a"),
        DataNeed("a-again", 99, (), RUCIO_DATA_KIND, "sc", "a"),
        DataNeed("gone", None, (), RUCIO_DATA_KIND, "sc", "gone"),
        DataNeed("empty", None, (), RUCIO_DATA_KIND, "sc", "empty"),
        DataNeed("given", 5, ("AU_RSE",), SKAO_DATA_KIND, "sc", "given"),
        DataNeed("nameless", None, (), RUCIO_DATA_KIND),
        DataNeed("web", None, (), SIMPLE_DATA_KIND),
    ]
    stub = StubRucio({
        ("sc", "a"): ReplicaInfo(bytes=3 * GIB, rses=("JP_RSE", "AU_RSE")),
        ("sc", "gone"): RucioLookupFailed("Rucio has no replica of sc:gone"),
        ("sc", "empty"): ReplicaInfo(bytes=1, rses=()),
    })
    resolved, problems = await resolve_needs(needs, stub)
    assert sorted(stub.calls) == [("sc", "a"), ("sc", "empty"), ("sc", "gone")]  # once per DID
    assert resolved[0].replicas == ("JP_RSE", "AU_RSE") and resolved[0].size_bytes == 3 * GIB
    assert resolved[1].size_bytes == 99  # the request's size wins
    assert resolved[2:] == needs[2:]
    assert problems == [
        "The data item nameless names no Rucio scope and object, so it cannot be located",
        "Rucio has no replica of sc:gone",
        "Rucio has no available replica of sc:empty",
    ]
