"""The offers service's pure decisions: request validation, offer-set assembly and client updates.

Every test passes a fixed ``now``; nothing here touches the bus, a database or the clock.
"""

from __future__ import annotations

import json
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from services.offers.domain import (
    REQUEST_TRANSITIONS,
    IllegalRequestTransition,
    NeedsQuote,
    OfferPolicy,
    PoolChoice,
    Rejected,
    RequestState,
    SessionView,
    UpdateDecision,
    build_offerset,
    decide_request,
    decide_update,
    expired,
    offerset_id_for,
    parse_update,
    request_transition,
)
from shared import iso8601
from shared.lifecycle import Phase
from shared.messages import Hold
from shared.models import (
    DOCKER_CONTAINER_KIND,
    JUPYTER_NOTEBOOK_KIND,
    KIND_BASE,
    S3_DATA_KIND,
    SIMPLE_COMPUTE_KIND,
    SIMPLE_DATA_KIND,
    SINGULARITY_CONTAINER_KIND,
    SKAO_DATA_KIND,
    EnumValueOption,
    ExecutionRequest,
    LifecyclePhase,
    MessageItem,
    OfferSetResponse,
    to_jsonable,
)
from tests.schema_validation import requires_schemas, validate_against
from tests.unit.offers_policy import NOW, POLICY

OWNER = "alice"


# -- helpers --------------------------------------------------------------------------------------


def notebook(location: str = "https://example.org/hello.ipynb") -> dict[str, Any]:
    return {"kind": JUPYTER_NOTEBOOK_KIND, "meta": {"name": "nb"}, "location": location}


def compute(cores: dict[str, int] | None = None, memory: dict[str, int] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"kind": SIMPLE_COMPUTE_KIND, "meta": {"name": "cpu"}}
    if cores is not None:
        block["cores"] = cores
    if memory is not None:
        block["memory"] = memory
    return block


def request_bytes(
    *,
    executable: dict[str, Any] | None = None,
    compute_block: dict[str, Any] | None = None,
    duration: str | None = None,
    start: str | None = None,
    with_executable: bool = True,
    data: list[dict[str, Any]] | None = None,
) -> bytes:
    document: dict[str, Any] = {}
    if with_executable:
        document["executable"] = executable if executable is not None else notebook()
    if data is not None:
        document["data"] = data
    if compute_block is not None:
        document["compute"] = compute_block
    requested: dict[str, str] = {}
    if duration is not None:
        requested["duration"] = duration
    if start is not None:
        requested["start"] = start
    if requested:
        document["schedule"] = {"requested": requested}
    return json.dumps(document).encode()


def quote_for(raw: bytes, request_id: str = "req-1") -> NeedsQuote:
    outcome = decide_request(raw, request_id, OWNER, NOW, POLICY)
    assert isinstance(outcome, NeedsQuote), _messages(outcome)
    return outcome


def rejected(raw: bytes, request_id: str = "req-1") -> OfferSetResponse:
    outcome = decide_request(raw, request_id, OWNER, NOW, POLICY)
    assert isinstance(outcome, Rejected), f"expected a rejection, got {outcome!r}"
    offerset = outcome.offerset
    assert offerset.result == "NO"
    assert not offerset.offers
    assert offerset.meta is not None
    assert offerset.meta.uuid == offerset_id_for(request_id)
    return offerset


def _messages(outcome: object) -> list[MessageItem]:
    if isinstance(outcome, Rejected) and outcome.offerset.meta is not None:
        return list(outcome.offerset.meta.messages or [])
    return []


def messages_of(offerset: OfferSetResponse) -> list[MessageItem]:
    assert offerset.meta is not None
    return list(offerset.meta.messages or [])


def only_message(offerset: OfferSetResponse, kind: str) -> MessageItem:
    found = [m for m in messages_of(offerset) if m.kind == kind]
    assert len(found) == 1, f"expected one {kind} message, got {messages_of(offerset)}"
    return found[0]


def assert_rendered(message: MessageItem) -> str:
    assert message.level == "ERROR"
    assert message.time == NOW
    assert message.message, f"message {message.kind} has no rendered text"
    assert "${" not in message.message, f"unrendered placeholder in {message.message!r}"
    return message.message


# -- decide_request: accepted requests -------------------------------------------------------------


def test_valid_notebook_request_needs_a_quote_with_the_requested_resources() -> None:
    raw = request_bytes(compute_block=compute({"min": 2, "max": 4}, {"min": 3, "max": 8}), duration="PT2H")

    outcome = quote_for(raw, "req-1")

    quote = outcome.quote
    assert quote.request_id == "req-1"
    assert quote.owner == OWNER
    assert (quote.cores_min, quote.cores_max) == (2, 4)
    assert (quote.memory_min, quote.memory_max) == (3, 8)
    assert quote.duration_s == 2 * 3600
    assert quote.earliest_start == NOW + timedelta(seconds=POLICY.prepare_s)
    assert quote.latest_start == quote.earliest_start + timedelta(seconds=POLICY.default_window_s)
    assert quote.prepare_s == POLICY.prepare_s
    assert quote.max_offers == POLICY.max_offers
    assert quote.expires_at == NOW + timedelta(seconds=POLICY.offer_expiry_s)
    assert isinstance(outcome.request, ExecutionRequest)
    assert outcome.request.executable is not None
    assert outcome.request.executable.kind == JUPYTER_NOTEBOOK_KIND


@pytest.mark.parametrize(
    ("compute_block", "expected"),
    [
        (None, (1, 1, 1, 1)),
        (compute(), (1, 1, 1, 1)),
        (compute({"min": 3}), (3, 3, 1, 1)),
        (compute({"max": 4}), (1, 4, 1, 1)),
        (compute(memory={"min": 5}), (1, 1, 5, 5)),
        (compute(memory={"max": 6}), (1, 1, 1, 6)),
        (compute({"min": 2, "max": 2}, {"min": 4, "max": 16}), (2, 2, 4, 16)),
    ],
)
def test_missing_minimums_default_to_one_and_missing_maximums_to_the_minimum(
    compute_block: dict[str, Any] | None, expected: tuple[int, int, int, int]
) -> None:
    quote = quote_for(request_bytes(compute_block=compute_block)).quote
    assert (quote.cores_min, quote.cores_max, quote.memory_min, quote.memory_max) == expected


def test_default_duration_and_window_come_from_the_policy() -> None:
    quote = quote_for(request_bytes()).quote
    assert quote.duration_s == POLICY.default_duration_s
    earliest = NOW + timedelta(seconds=POLICY.prepare_s)
    assert quote.earliest_start == earliest
    assert quote.latest_start == earliest + timedelta(seconds=POLICY.default_window_s)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("PT10M", 600), ("PT1H30M", 5400), ("P1D", 86400), ("PT45S", 45)],
)
def test_duration_comes_from_schedule_requested_duration(duration: str, seconds: int) -> None:
    assert quote_for(request_bytes(duration=duration)).quote.duration_s == seconds


def test_a_future_start_window_bounds_the_quote() -> None:
    quote = quote_for(request_bytes(start="2026-01-01T13:00:00Z/2026-01-01T15:00:00Z")).quote
    assert quote.earliest_start == datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    assert quote.latest_start == datetime(2026, 1, 1, 15, 0, tzinfo=UTC)


def test_a_window_that_opened_already_starts_after_preparation_and_ends_at_its_end() -> None:
    quote = quote_for(request_bytes(start="2026-01-01T11:00:00Z/PT3H")).quote
    assert quote.earliest_start == NOW + timedelta(seconds=POLICY.prepare_s)
    assert quote.latest_start == datetime(2026, 1, 1, 14, 0, tzinfo=UTC)


def test_a_docker_container_is_supported_on_the_local_platform() -> None:
    docker = {
        "kind": KIND_BASE + "executable/docker-container.yaml",
        "image": {"locations": ["ghcr.io/example/hello:1"]},
    }
    assert isinstance(decide_request(request_bytes(executable=docker), "r", OWNER, NOW, POLICY), NeedsQuote)


@pytest.mark.parametrize(
    "location", ["/data/notebooks/hello.ipynb", "http://example.org/a.ipynb", "file:///tmp/a.ipynb"]
)
def test_absolute_notebook_locations_are_accepted(location: str) -> None:
    quote_for(request_bytes(executable=notebook(location)))


# -- offer-set ids -----------------------------------------------------------------------------


def test_offerset_id_is_derived_deterministically_from_the_request_id() -> None:
    first = quote_for(request_bytes(), "req-same")
    second = quote_for(request_bytes(), "req-same")
    assert first.quote == second.quote

    derived = offerset_id_for("req-same")
    assert derived == offerset_id_for("req-same")
    assert derived != offerset_id_for("req-other")
    assert str(uuid.UUID(derived)) == derived

    # The id the offer set gets, whether rejected or built, is that same derived id.
    no = rejected(request_bytes(executable=notebook("relative.ipynb")), "req-same")
    assert no.meta is not None and no.meta.uuid == derived
    yes = build_offerset("req-same", first.request, [_hold(0)], [], NOW, NOW, POLICY)
    assert yes.meta is not None and yes.meta.uuid == derived


def test_a_uuid_request_id_is_the_offerset_id() -> None:
    request_id = "0b1e4b86-8f53-4b0e-9f46-2bb8d1b3c6f7"
    assert offerset_id_for(request_id) == request_id
    offerset = rejected(request_bytes(with_executable=False), request_id)
    assert offerset.meta is not None and offerset.meta.uuid == request_id


# -- decide_request: rejections ---------------------------------------------------------------------


def test_unparsable_duration_is_an_input_syntax_failure() -> None:
    offerset = rejected(request_bytes(duration="two hours"))
    text = assert_rendered(only_message(offerset, "urn:input-syntax-fail"))
    assert "two hours" in text
    assert "duration" in text


def test_unparsable_start_interval_is_an_input_syntax_failure() -> None:
    offerset = rejected(request_bytes(start="tomorrow morning"))
    text = assert_rendered(only_message(offerset, "urn:input-syntax-fail"))
    assert "tomorrow morning" in text
    assert "start" in text


def test_start_window_ending_before_the_earliest_start_is_unmet() -> None:
    # Ends 30 s after now, but preparation takes 60 s.
    offerset = rejected(request_bytes(start="2026-01-01T11:00:00Z/2026-01-01T12:00:30Z"))
    text = assert_rendered(only_message(offerset, "urn:start-window-unmet"))
    assert "2026-01-01T12:00:30Z" in text
    assert iso8601.format_instant(NOW + timedelta(seconds=POLICY.prepare_s)) in text


def test_relative_notebook_location_is_an_invalid_value() -> None:
    offerset = rejected(request_bytes(executable=notebook("notebooks/hello.ipynb")))
    text = assert_rendered(only_message(offerset, "urn:invalid-value"))
    assert "notebooks/hello.ipynb" in text


def test_an_executable_kind_the_platform_cannot_run_is_not_supported() -> None:
    singularity = {"kind": SINGULARITY_CONTAINER_KIND, "location": "/images/tool.sif"}
    offerset = rejected(request_bytes(executable=singularity))
    text = assert_rendered(only_message(offerset, "urn:not-supported"))
    assert SINGULARITY_CONTAINER_KIND in text
    assert POLICY.platform in text


def test_a_platform_with_no_supported_executables_refuses_a_notebook() -> None:
    policy = OfferPolicy(**{**POLICY.__dict__, "pools": (PoolChoice("nowhere", "nowhere", 60),)})
    outcome = decide_request(request_bytes(), "r", OWNER, NOW, policy)
    assert isinstance(outcome, Rejected)
    kinds = [m.kind for m in messages_of(outcome.offerset)]
    assert kinds == ["urn:not-supported"]


DOCKER = {"kind": DOCKER_CONTAINER_KIND, "image": {"locations": ["ghcr.io/example/hello:1"]}}


def s3(name: str) -> dict[str, Any]:
    return {
        "kind": S3_DATA_KIND,
        "meta": {"name": name},
        "endpoint": "https://s3.example.org",
        "template": "https://{bucket}.s3.example.org/{object}",
        "bucket": "b",
        "object": name,
    }


def skao(name: str) -> dict[str, Any]:
    return {"kind": SKAO_DATA_KIND, "meta": {"name": name}, "skao": {"namespace": "n", "objectname": name}}


def with_pools(*pools: PoolChoice) -> OfferPolicy:
    return OfferPolicy(**{**POLICY.__dict__, "pools": pools})


def pool(name: str, executables: set[str], data: set[str]) -> PoolChoice:
    return PoolChoice(name, f"{name}-platform", 30, executable_kinds=frozenset(executables),
                      data_kinds=frozenset(data))  # fmt: skip


def test_data_the_platform_cannot_stage_is_not_supported() -> None:
    offerset = rejected(request_bytes(executable=DOCKER, data=[s3("cube")]))
    text = assert_rendered(only_message(offerset, "urn:not-supported"))
    assert S3_DATA_KIND in text
    assert POLICY.platform in text


def test_only_pools_whose_platform_runs_the_executable_and_stages_the_data_are_asked() -> None:
    policy = with_pools(
        pool("runs-only", {DOCKER_CONTAINER_KIND}, set()),
        pool("stages-s3", {DOCKER_CONTAINER_KIND}, {S3_DATA_KIND, SIMPLE_DATA_KIND}),
        pool("no-docker", {JUPYTER_NOTEBOOK_KIND}, {S3_DATA_KIND}),
    )
    outcome = decide_request(request_bytes(executable=DOCKER, data=[s3("cube")]), "r", OWNER, NOW, policy)
    assert isinstance(outcome, NeedsQuote), _messages(outcome)
    assert outcome.pools == ("stages-s3",)
    assert outcome.quote.prepare_s == 30
    # Without data, every pool that runs the executable is asked.
    outcome = decide_request(request_bytes(executable=DOCKER), "r", OWNER, NOW, policy)
    assert isinstance(outcome, NeedsQuote)
    assert outcome.pools == ("runs-only", "stages-s3")


def test_data_kinds_no_one_platform_stages_together_are_not_supported() -> None:
    policy = with_pools(
        pool("a", {DOCKER_CONTAINER_KIND}, {S3_DATA_KIND}),
        pool("b", {DOCKER_CONTAINER_KIND}, {SKAO_DATA_KIND}),
    )
    outcome = decide_request(
        request_bytes(executable=DOCKER, data=[s3("x"), skao("y")]), "r", OWNER, NOW, policy
    )
    assert isinstance(outcome, Rejected)
    message = only_message(outcome.offerset, "urn:not-supported")
    text = assert_rendered(message)
    assert S3_DATA_KIND in text and SKAO_DATA_KIND in text
    assert "a-platform, b-platform" in text


def test_each_data_kind_no_platform_stages_is_named_once() -> None:
    policy = with_pools(pool("a", {DOCKER_CONTAINER_KIND}, {SIMPLE_DATA_KIND}))
    simple = {"kind": SIMPLE_DATA_KIND, "meta": {"name": "z"}, "location": "https://example.org/z"}
    raw = request_bytes(executable=DOCKER, data=[s3("x"), s3("w"), skao("y"), simple])
    outcome = decide_request(raw, "r", OWNER, NOW, policy)
    assert isinstance(outcome, Rejected)
    texts = [assert_rendered(m) for m in messages_of(outcome.offerset)]
    assert len(texts) == 2
    assert S3_DATA_KIND in texts[0] and SKAO_DATA_KIND in texts[1]
    assert all("a-platform" in text for text in texts)


def test_an_executable_no_platform_runs_is_reported_without_its_data() -> None:
    singularity = {"kind": SINGULARITY_CONTAINER_KIND, "location": "/images/tool.sif"}
    offerset = rejected(request_bytes(executable=singularity, data=[s3("cube")]))
    text = assert_rendered(only_message(offerset, "urn:not-supported"))
    assert SINGULARITY_CONTAINER_KIND in text


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe\x00\x81garbage", b"{ this is : [ not json", b"[1, 2, 3]", b"", b"just a string"],
)
def test_garbage_bytes_are_an_input_syntax_failure(raw: bytes) -> None:
    offerset = rejected(raw)
    messages = messages_of(offerset)
    assert [m.kind for m in messages] == ["urn:input-syntax-fail"]
    assert_rendered(messages[0])


def test_a_request_without_an_executable_is_refused() -> None:
    offerset = rejected(request_bytes(with_executable=False, compute_block=compute({"min": 1})))
    assert_rendered(only_message(offerset, "urn:executable-required"))


def test_several_problems_are_all_reported() -> None:
    offerset = rejected(
        request_bytes(executable=notebook("hello.ipynb"), duration="PT", start="not-an-interval")
    )
    kinds = sorted(m.kind for m in messages_of(offerset))
    assert kinds == ["urn:input-syntax-fail", "urn:input-syntax-fail", "urn:invalid-value"]
    for message in messages_of(offerset):
        assert_rendered(message)


def test_an_unmet_window_and_an_unsupported_kind_are_both_reported() -> None:
    singularity = {"kind": SINGULARITY_CONTAINER_KIND, "location": "/images/tool.sif"}
    offerset = rejected(
        request_bytes(executable=singularity, start="2026-01-01T10:00:00Z/2026-01-01T11:00:00Z")
    )
    assert sorted(m.kind for m in messages_of(offerset)) == ["urn:not-supported", "urn:start-window-unmet"]


@requires_schemas
def test_rejections_conform_to_the_schema() -> None:
    offerset = rejected(request_bytes(executable=notebook("hello.ipynb"), duration="forever"))
    validate_against("OfferSetResponse", to_jsonable(offerset))


# -- build_offerset -------------------------------------------------------------------------------

SESSION_IDS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"session-{n}")) for n in range(3)]


def _hold(n: int, *, prepare_s: int = 120) -> Hold:
    start = datetime(2026, 1, 1, 12, 5, tzinfo=UTC) + timedelta(hours=n)
    return Hold(
        session_id=SESSION_IDS[n],
        pool="local",
        start=start,
        end=start + timedelta(minutes=90),
        cores=2 + n,
        memory_gib=4 + n,
        prepare_s=prepare_s,
    )


def _request() -> ExecutionRequest:
    raw = request_bytes(compute_block=compute({"min": 2, "max": 4}, {"min": 4, "max": 8}), duration="PT90M")
    return quote_for(raw).request


EXPIRES = NOW + timedelta(seconds=POLICY.offer_expiry_s)


def test_holds_become_offered_sessions_in_a_yes_offerset() -> None:
    holds = [_hold(0), _hold(1)]
    offerset = build_offerset("req-1", _request(), holds, [], EXPIRES, NOW, POLICY)

    assert offerset.result == "YES"
    assert offerset.meta is not None
    name = offerset.meta.name
    assert name == f"offerset-{offerset_id_for('req-1')[:8]}"
    assert offerset.meta.uuid == offerset_id_for("req-1")
    assert not offerset.meta.messages
    offers = offerset.offers or []
    assert len(offers) == len(holds)

    for index, (offer, hold) in enumerate(zip(offers, holds, strict=True)):
        assert offer.meta is not None
        assert offer.meta.uuid == hold.session_id
        assert offer.meta.name == f"{name}-offer-{index}"
        assert offer.phase == "OFFERED"
        assert offer.expires == EXPIRES

        options = offer.meta.options or []
        assert len(options) == 1
        option = options[0]
        assert isinstance(option, EnumValueOption)
        assert option.path == "phase"
        assert set(option.values or []) == {"ACCEPTED", "REJECTED", "CANCELLED"}
        assert len(option.values or []) == 3

        assert offer.compute is not None
        assert offer.compute.cores is not None and offer.compute.memory is not None
        assert offer.compute.cores.min == offer.compute.cores.max == hold.cores
        assert offer.compute.memory.min == offer.compute.memory.max == hold.memory_gib

        schedule = offer.schedule
        assert schedule is not None
        assert schedule.available is not None and schedule.preparing is not None
        assert schedule.available.start == f"{iso8601.format_instant(hold.start)}/PT0S"
        assert iso8601.parse_duration(schedule.available.duration or "") == hold.end - hold.start
        assert schedule.available.duration == "PT1H30M"
        prepare = timedelta(seconds=hold.prepare_s)
        assert schedule.preparing.start == iso8601.format_instant(hold.start - prepare)
        assert iso8601.parse_duration(schedule.preparing.duration or "") == prepare
        # The compute resource carries the same schedule as its session.
        assert offer.compute.schedule == schedule

        assert offer.executable is not None
        assert offer.executable.kind == JUPYTER_NOTEBOOK_KIND


def test_component_uuids_are_deterministic_per_session() -> None:
    request = _request()
    first = build_offerset("req-1", request, [_hold(0), _hold(1)], [], EXPIRES, NOW, POLICY)
    again = build_offerset("req-1", request, [_hold(0), _hold(1)], [], EXPIRES, NOW, POLICY)

    def component_ids(offerset: OfferSetResponse) -> list[tuple[str | None, str | None]]:
        ids = []
        for offer in offerset.offers or []:
            assert offer.compute is not None and offer.compute.meta is not None
            assert offer.executable is not None and offer.executable.meta is not None
            ids.append((offer.compute.meta.uuid, offer.executable.meta.uuid))
        return ids

    ids = component_ids(first)
    assert ids == component_ids(again)
    flat = [i for pair in ids for i in pair]
    assert all(i is not None for i in flat)
    assert len(set(flat)) == len(flat), "component ids must differ between sessions and roles"
    assert not set(flat) & set(SESSION_IDS)
    for value in flat:
        assert str(uuid.UUID(str(value))) == value


@requires_schemas
def test_yes_offerset_conforms_to_the_schema() -> None:
    offerset = build_offerset("req-1", _request(), [_hold(0), _hold(1), _hold(2)], [], EXPIRES, NOW, POLICY)
    validate_against("OfferSetResponse", to_jsonable(offerset))


def test_offered_components_are_initializing_and_serialise_without_warnings() -> None:
    offerset = build_offerset("req-1", _request(), [_hold(0)], [], EXPIRES, NOW, POLICY)
    offer = (offerset.offers or [])[0]
    assert offer.compute is not None and offer.executable is not None
    # Typed enum values, not bare strings slipped past validation (pydantic warns when dumping those).
    assert isinstance(offer.compute.phase, LifecyclePhase)
    assert isinstance(offer.executable.phase, LifecyclePhase)
    assert offer.executable.phase is LifecyclePhase.INITIALIZING
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        document = to_jsonable(offerset)
    assert document["offers"][0]["executable"]["phase"] == "INITIALIZING"


NO_HOLD_REASONS = ["not enough cores before the window closes", "memory exhausted"]


def test_no_holds_gives_no_with_one_resource_limit_message_per_reason() -> None:
    offerset = build_offerset("req-1", _request(), [], NO_HOLD_REASONS, EXPIRES, NOW, POLICY)

    assert offerset.result == "NO"
    assert not offerset.offers
    messages = messages_of(offerset)
    assert [m.kind for m in messages] == ["urn:resource-limit"] * len(NO_HOLD_REASONS)
    for message, reason in zip(messages, NO_HOLD_REASONS, strict=True):
        text = assert_rendered(message)
        assert reason in text
        assert POLICY.pool in text


@requires_schemas
def test_a_no_offerset_with_resource_limits_conforms_to_the_schema() -> None:
    offerset = build_offerset("req-1", _request(), [], NO_HOLD_REASONS, EXPIRES, NOW, POLICY)
    validate_against("OfferSetResponse", to_jsonable(offerset))


def test_no_holds_and_no_reason_still_says_why() -> None:
    offerset = build_offerset("req-1", _request(), [], [], EXPIRES, NOW, POLICY)
    assert offerset.result == "NO"
    messages = messages_of(offerset)
    assert [m.kind for m in messages] == ["urn:resource-limit"]
    assert_rendered(messages[0])


# -- parse_update ---------------------------------------------------------------------------------


def _update(
    value: object, *, kind: object = "uri:enum-value-update", path: object = "phase"
) -> dict[str, Any]:
    return {"kind": kind, "path": path, "value": value}


@pytest.mark.parametrize("phase", [Phase.ACCEPTED, Phase.REJECTED, Phase.CANCELLED])
def test_a_good_update_parses_to_a_phase(phase: Phase) -> None:
    assert parse_update(_update(phase.value), NOW) is phase
    assert parse_update(_update(phase.value, path="/phase"), NOW) is phase


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (_update("ACCEPTED", kind="uri:string-value-update"), "urn:not-supported"),
        (_update("ACCEPTED", kind=None), "urn:not-supported"),
        (_update("ACCEPTED", path="compute.cores"), "urn:not-supported"),
        (_update("ACCEPTED", path=None), "urn:not-supported"),
        (_update("FINISHED"), "urn:invalid-value"),
        (_update(None), "urn:invalid-value"),
        (None, "urn:input-syntax-fail"),
        (["ACCEPTED"], "urn:input-syntax-fail"),
        ("ACCEPTED", "urn:input-syntax-fail"),
    ],
)
def test_a_bad_update_gives_a_specific_message(body: object, kind: str) -> None:
    result = parse_update(cast(Any, body), NOW)
    assert isinstance(result, MessageItem), f"expected a message, got {result!r}"
    assert result.kind == kind
    assert_rendered(result)


# -- decide_update --------------------------------------------------------------------------------

SID = SESSION_IDS[0]
SIBLINGS = [SESSION_IDS[0], SESSION_IDS[1], SESSION_IDS[2]]


def view(phase: Phase, *, expires_at: datetime | None = EXPIRES, session_id: str = SID) -> SessionView:
    return SessionView(
        session_id=session_id, owner=OWNER, phase=phase, expires_at=expires_at, offerset_id="os-1"
    )


def test_only_the_owner_may_update_a_session() -> None:
    decision = decide_update(view(Phase.OFFERED), "mallory", Phase.ACCEPTED, SIBLINGS, NOW)
    assert not decision.applied
    assert not decision.events
    assert not decision.release
    assert not decision.book
    assert [m.kind for m in decision.messages] == ["urn:forbidden"]
    assert SID in assert_rendered(decision.messages[0])


def test_accepting_an_offer_rejects_its_offered_siblings_and_books_it() -> None:
    decision = decide_update(view(Phase.OFFERED), OWNER, Phase.ACCEPTED, SIBLINGS, NOW)
    assert decision.applied
    assert decision.new_phase is Phase.ACCEPTED
    assert decision.book
    assert decision.siblings == (SESSION_IDS[1], SESSION_IDS[2])
    assert decision.events == (
        (SID, Phase.ACCEPTED),
        (SESSION_IDS[1], Phase.REJECTED),
        (SESSION_IDS[2], Phase.REJECTED),
    )
    assert not decision.release
    assert not decision.forward_cancel


def test_accepting_a_lone_offer_books_it_with_no_siblings() -> None:
    decision = decide_update(view(Phase.OFFERED), OWNER, Phase.ACCEPTED, [SID], NOW)
    assert decision.applied and decision.book
    assert decision.siblings == ()
    assert decision.events == ((SID, Phase.ACCEPTED),)


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1), timedelta(hours=2)])
def test_accepting_after_expiry_expires_the_offer_instead(late: timedelta) -> None:
    decision = decide_update(view(Phase.OFFERED), OWNER, Phase.ACCEPTED, SIBLINGS, EXPIRES + late)
    assert not decision.applied
    assert decision.new_phase is Phase.EXPIRED
    assert decision.events == ((SID, Phase.EXPIRED),)
    assert decision.release == (SID,)
    assert not decision.book
    assert [m.kind for m in decision.messages] == ["urn:offer-expired"]
    assert iso8601.format_instant(EXPIRES) in assert_rendered_at(decision.messages[0], EXPIRES + late)


def assert_rendered_at(message: MessageItem, now: datetime) -> str:
    assert message.time == now
    assert message.message and "${" not in message.message
    return message.message


def test_accepting_just_before_expiry_is_accepted() -> None:
    decision = decide_update(
        view(Phase.OFFERED), OWNER, Phase.ACCEPTED, SIBLINGS, EXPIRES - timedelta(seconds=1)
    )
    assert decision.applied and decision.new_phase is Phase.ACCEPTED and decision.book


def test_rejecting_an_offer_releases_it() -> None:
    decision = decide_update(view(Phase.OFFERED), OWNER, Phase.REJECTED, SIBLINGS, NOW)
    assert decision.applied
    assert decision.new_phase is Phase.REJECTED
    assert decision.events == ((SID, Phase.REJECTED),)
    assert decision.release == (SID,)
    assert not decision.book
    assert not decision.forward_cancel


def test_cancelling_an_offer_records_it_and_forwards_the_cancel_to_the_owner_of_cancelled() -> None:
    decision = decide_update(view(Phase.OFFERED), OWNER, Phase.CANCELLED, SIBLINGS, NOW)
    assert decision.applied
    assert decision.new_phase is Phase.CANCELLED
    # Recorded at once (no accept may follow), published by the launcher; the scheduler frees the
    # hold on the cancel's way there, so nothing is released from here.
    assert decision.recorded == ((SID, Phase.CANCELLED),)
    assert decision.events == ()
    assert decision.release == ()
    assert decision.forward_cancel
    assert not decision.book


@pytest.mark.parametrize(
    "phase", [Phase.ACCEPTED, Phase.WAITING, Phase.PREPARING, Phase.AVAILABLE, Phase.RUNNING]
)
def test_cancelling_an_accepted_session_is_forwarded_without_events(phase: Phase) -> None:
    decision = decide_update(view(phase, expires_at=None), OWNER, Phase.CANCELLED, [], NOW)
    assert decision.applied
    assert decision.forward_cancel
    assert decision.events == ()
    assert decision.recorded == ()
    assert decision.release == ()
    assert not decision.book
    assert decision.new_phase is phase


def test_an_illegal_update_lists_the_legal_ones() -> None:
    decision = decide_update(view(Phase.RUNNING, expires_at=None), OWNER, Phase.REJECTED, [], NOW)
    assert not decision.applied
    assert decision.events == ()
    assert decision.release == ()
    assert not decision.forward_cancel
    assert [m.kind for m in decision.messages] == ["urn:illegal-transition"]
    text = assert_rendered(decision.messages[0])
    assert "RUNNING" in text and "REJECTED" in text
    assert "legal updates now: CANCELLED" in text


def test_an_update_of_a_finished_session_says_none_are_legal() -> None:
    decision = decide_update(view(Phase.COMPLETED, expires_at=None), OWNER, Phase.CANCELLED, [], NOW)
    assert not decision.applied
    assert [m.kind for m in decision.messages] == ["urn:illegal-transition"]
    assert "legal updates now: none" in assert_rendered(decision.messages[0])


def test_a_repeated_accept_is_a_no_op() -> None:
    decision = decide_update(view(Phase.ACCEPTED), OWNER, Phase.ACCEPTED, SIBLINGS, NOW)
    assert decision == UpdateDecision(applied=True, new_phase=Phase.ACCEPTED)


def test_a_repeated_accept_after_expiry_is_still_a_no_op() -> None:
    # The session was accepted in time; the offer's expiry no longer matters.
    decision = decide_update(
        view(Phase.ACCEPTED), OWNER, Phase.ACCEPTED, SIBLINGS, EXPIRES + timedelta(hours=1)
    )
    assert decision.applied
    assert decision.events == ()
    assert decision.release == ()


# -- expired --------------------------------------------------------------------------------------


def test_only_offered_sessions_past_their_expiry_are_expired() -> None:
    at = datetime(2026, 1, 1, 12, 10, tzinfo=UTC)
    sessions = [
        view(Phase.OFFERED, expires_at=at - timedelta(seconds=1), session_id="past"),
        view(Phase.OFFERED, expires_at=at, session_id="exactly-now"),
        view(Phase.OFFERED, expires_at=at + timedelta(seconds=1), session_id="future"),
        view(Phase.OFFERED, expires_at=None, session_id="no-expiry"),
        view(Phase.ACCEPTED, expires_at=at - timedelta(minutes=5), session_id="accepted"),
        view(Phase.REJECTED, expires_at=at - timedelta(minutes=5), session_id="rejected"),
        view(Phase.EXPIRED, expires_at=at - timedelta(minutes=5), session_id="already-expired"),
    ]
    assert expired(sessions, at) == ["past", "exactly-now"]
    assert expired([], at) == []


# -- request states -------------------------------------------------------------------------------


def test_a_quoting_request_becomes_answered() -> None:
    assert request_transition(RequestState.QUOTING, RequestState.ANSWERED) is True


def test_a_repeated_request_fact_is_a_no_op() -> None:
    # A late or redelivered quote, or a dead letter, after the offer set went out.
    assert request_transition(RequestState.ANSWERED, RequestState.ANSWERED) is False
    assert request_transition(RequestState.QUOTING, RequestState.QUOTING) is False


def test_an_answered_request_never_quotes_again() -> None:
    with pytest.raises(IllegalRequestTransition, match="from ANSWERED to QUOTING"):
        request_transition(RequestState.ANSWERED, RequestState.QUOTING)


def test_the_request_table_covers_every_state_and_keeps_the_stored_spelling() -> None:
    assert set(REQUEST_TRANSITIONS) == set(RequestState)
    assert [state.value for state in RequestState] == ["QUOTING", "ANSWERED"]
    with pytest.raises(TypeError):
        REQUEST_TRANSITIONS[RequestState.ANSWERED] = frozenset({RequestState.QUOTING})  # type: ignore[index]


# -- pools that run code on the broker's host -----------------------------------------------------


def on_host(name: str, allowed: set[str]) -> PoolChoice:
    return PoolChoice(name, "local", 2, executable_kinds=frozenset({JUPYTER_NOTEBOOK_KIND}),
                      allowed_owners=frozenset(allowed))  # fmt: skip


def test_an_owner_no_on_host_pool_allows_gets_a_no_naming_the_rule() -> None:
    policy = with_pools(on_host("here", {"bob"}), on_host("there", set()))
    outcome = decide_request(request_bytes(), "r", OWNER, NOW, policy)
    assert isinstance(outcome, Rejected)
    refusals = messages_of(outcome.offerset)
    assert [m.kind for m in refusals] == ["urn:not-allowed", "urn:not-allowed"]
    texts = [assert_rendered(m) for m in refusals]
    rule = "runs code on the broker's host only for owners listed in its allowed_owners"
    assert texts[0].startswith(f"Pool here {rule}")
    assert "Pool there" in texts[1]


def test_only_the_pools_that_allow_the_owner_are_asked() -> None:
    policy = with_pools(
        on_host("mine", {OWNER}),
        on_host("not-mine", {"bob"}),
        pool("elsewhere", {JUPYTER_NOTEBOOK_KIND}, set()),  # runs code elsewhere: for anyone
    )
    outcome = decide_request(request_bytes(), "r", OWNER, NOW, policy)
    assert isinstance(outcome, NeedsQuote), _messages(outcome)
    assert outcome.pools == ("mine", "elsewhere")
    other = decide_request(request_bytes(), "r", "carol", NOW, policy)
    assert isinstance(other, NeedsQuote) and other.pools == ("elsewhere",)
