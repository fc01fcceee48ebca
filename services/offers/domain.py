"""Pure decisions of the offers service: validate a request, build an offer set, judge an update.

Nothing here touches the bus, the database or the clock: ``now`` is always an argument.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

from shared import iso8601
from shared.lifecycle import CLIENT_UPDATES, IllegalTransition, Phase, client_update
from shared.messages import Hold, QuoteSlots
from shared.models import (
    JUPYTER_NOTEBOOK_KIND,
    ComponentMetadata,
    CostItem,
    DockerContainer,
    EnumValueOption,
    ExecutionRequest,
    InvalidRequest,
    LifecyclePhase,
    LifecycleSchedule,
    MessageItem,
    MetricItem,
    MinMax,
    OfferSetResponse,
    ScheduledExecutionSession,
    SimpleComputeResource,
    StartDurationInstant,
    StartDurationInterval,
    parse_execution_request,
)
from shared.models.data_products import NotADataProduct, data_product_did
from shared.models.limits import MAX_ANSWER_BYTES, MAX_DURATION
from shared.models.parsing import capped

# Offer-set ids are derived from request ids so a redelivered request maps to the same offer set.
_OFFERSET_NAMESPACE = uuid.UUID("5b0f2c1e-8a44-4f57-9d51-2f6c1d8e9a10")


@dataclass(frozen=True)
class PoolChoice:
    """What the offers service needs to know of a scheduler pool.

    The kinds are what the pool's platform plugin declares it can run (learnt from the installed
    plugins by the composition root): a pool is offered only for requests within them.
    """

    name: str
    platform: str
    prepare_s: int
    costs: tuple[dict[str, Any], ...] = ()
    metrics: tuple[dict[str, Any], ...] = ()
    executable_kinds: frozenset[str] = frozenset()
    data_kinds: frozenset[str] = frozenset()
    # For a pool whose platform runs user code on the broker's host: the owner tokens it runs it
    # for (empty: nobody). None: the platform runs code elsewhere, for anyone.
    allowed_owners: frozenset[str] | None = None
    # The pool's `allow_privileged` (false: a container asking `privileged: true` is refused).
    allows_privileged: bool = False
    # The pool's per-request `limits.storage_gib`; None: its whole capacity.
    max_storage_gib: int | None = None
    # What one storage resource costs on this pool (`storage_costs`), shown on each one offered.
    storage_costs: tuple[dict[str, Any], ...] = ()

    def admits(self, owner: str) -> bool:
        return self.allowed_owners is None or owner in self.allowed_owners

    # Validated once per pool, not once per offer: every offer of the pool shows the same items.
    @cached_property
    def cost_items(self) -> list[CostItem] | None:
        return [CostItem.model_validate(item) for item in self.costs] or None

    @cached_property
    def metric_items(self) -> list[MetricItem] | None:
        return [MetricItem.model_validate(item) for item in self.metrics] or None

    @cached_property
    def storage_cost_items(self) -> list[CostItem] | None:
        return [CostItem.model_validate(item) for item in self.storage_costs] or None


@dataclass(frozen=True)
class OfferPolicy:
    pool: str
    platform: str
    prepare_s: int
    max_offers: int
    offer_expiry_s: int
    default_duration_s: int
    default_window_s: int
    public_url: str
    # Every configured pool (the one named above among them), with what its platform can run.
    pools: tuple[PoolChoice, ...]

    def choice(self, pool: str) -> PoolChoice | None:
        return next((p for p in self.pools if p.name == pool), None)


@dataclass(frozen=True)
class Rejected:
    offerset: OfferSetResponse


@dataclass(frozen=True)
class NeedsQuote:
    request: ExecutionRequest
    quote: QuoteSlots
    pools: tuple[str, ...]


def offerset_id_for(request_id: str) -> str:
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        return str(uuid.uuid5(_OFFERSET_NAMESPACE, request_id))


def _error(now: datetime, kind: str, template: str, /, **values: object) -> MessageItem:
    return MessageItem.error(kind, template, time=now, **values)


def no_offerset(
    offerset_id: str, messages: Sequence[MessageItem], now: datetime, policy: OfferPolicy
) -> OfferSetResponse:
    return OfferSetResponse(
        meta=ComponentMetadata(
            uuid=offerset_id,
            name=f"offerset-{offerset_id[:8]}",
            url=f"{policy.public_url}/offersets/{offerset_id}",
            created=now,
            messages=capped(messages, now),
        ),
        result="NO",
    )


def too_large_offerset(
    offerset_id: str, size: int, now: datetime, policy: OfferPolicy, *, sent: bool = False
) -> OfferSetResponse:
    """The NO that stands in for an offer set too large for the bus: ``sent`` when the server refused
    it (the relay's safety net), else it was measured before it was committed."""
    template = (
        "The answer to this request (${size} bytes) was refused by the bus, whose limit is ${limit} bytes"
        if sent
        else "The offer set for this request would be ${size} bytes, more than the ${limit} bytes an "
        "answer may have: send a smaller request (fewer or shorter data items, executable or storage)"
    )
    return no_offerset(
        offerset_id,
        [_error(now, "urn:answer-too-large", template, size=size, limit=MAX_ANSWER_BYTES)],
        now,
        policy,
    )


def decide_request(
    raw: bytes, request_id: str, owner: str, now: datetime, policy: OfferPolicy
) -> Rejected | NeedsQuote:
    """Validate everything the offers service can judge alone; the pool's capacity is the scheduler's."""
    offerset_id = offerset_id_for(request_id)
    try:
        request = parse_execution_request(raw, now=now)
    except InvalidRequest as invalid:
        return Rejected(no_offerset(offerset_id, invalid.messages, now, policy))

    executable = request.executable
    pools, problems = _pools_that_can_run(request, policy.pools, now)
    pools, refusals = _pools_for_owner(pools, owner, now)
    pools, refused = _pools_within_rules(pools, request, now)
    refusals += refused
    if not pools:
        # Every pool that could run it said no, each for its own reason: name them all.
        problems.extend(refusals)
    problems.extend(_data_product_problems(request, now))
    if executable is not None and executable.kind == JUPYTER_NOTEBOOK_KIND:
        location = getattr(executable, "location", None) or ""
        if not _is_absolute_location(location):
            problems.append(
                _error(
                    now,
                    "urn:invalid-value",
                    "The notebook location '${location}' must be an absolute path or an http(s) or "
                    "file URL (the broker does not share your working directory)",
                    location=location,
                )
            )

    duration = timedelta(seconds=policy.default_duration_s)
    window: tuple[datetime, datetime] | None = None
    requested = request.schedule.requested if request.schedule else None
    if requested is not None and requested.duration is not None:
        try:
            duration = iso8601.parse_duration(requested.duration)
        except ValueError as exc:
            problems.append(
                _error(
                    now,
                    "urn:input-syntax-fail",
                    "The requested duration '${value}' is not a valid ISO-8601 duration: ${reason}",
                    value=requested.duration,
                    reason=exc,
                )
            )
        else:
            if duration <= timedelta(0):
                problems.append(
                    _error(
                        now,
                        "urn:invalid-value",
                        "The requested duration '${value}' must be longer than zero",
                        value=requested.duration,
                    )
                )
            elif duration > MAX_DURATION:
                problems.append(
                    _error(
                        now,
                        "urn:invalid-value",
                        "The requested duration '${value}' is longer than the limit of ${limit} (100 years)",
                        value=requested.duration,
                        limit=iso8601.format_duration(MAX_DURATION),
                    )
                )
                duration = MAX_DURATION  # what follows must not judge an impossible number again
    if requested is not None and requested.start is not None:
        try:
            window = iso8601.parse_interval(requested.start)
        except ValueError as exc:
            problems.append(
                _error(
                    now,
                    "urn:input-syntax-fail",
                    "The requested start '${value}' is not a valid ISO-8601 interval: ${reason}",
                    value=requested.start,
                    reason=exc,
                )
            )

    prepare_s = min((p.prepare_s for p in pools), default=policy.prepare_s)
    earliest = now + timedelta(seconds=prepare_s)
    latest = earliest + timedelta(seconds=policy.default_window_s)
    if window is not None:
        if window[1] < earliest:
            problems.append(
                _error(
                    now,
                    "urn:start-window-unmet",
                    "The requested start window ${start} to ${end} ends before the earliest possible "
                    "start ${earliest} (preparation takes ${prepare})",
                    start=iso8601.format_instant(window[0]),
                    end=iso8601.format_instant(window[1]),
                    earliest=iso8601.format_instant(earliest),
                    prepare=iso8601.format_duration(timedelta(seconds=prepare_s)),
                )
            )
        else:
            earliest = max(earliest, window[0])
            latest = window[1]
    try:
        # The scheduler adds the duration (and a little more) to the latest start.
        _ = latest + duration + timedelta(days=1)
    except OverflowError:
        problems.append(
            _error(
                now,
                "urn:invalid-value",
                "The requested schedule (latest start ${latest}, duration ${duration}) ends after "
                "the last date the broker can represent (the year 9999)",
                latest=iso8601.format_instant(latest),
                duration=iso8601.format_duration(duration),
            )
        )

    cores, memory = _compute_ranges(request.compute)
    if problems:
        return Rejected(no_offerset(offerset_id, [*(request.translated or []), *problems], now, policy))

    quote = QuoteSlots(
        request_id=request_id,
        owner=owner,
        cores_min=cores.min or 1,
        cores_max=cores.max or 1,
        memory_min=memory.min or 1,
        memory_max=memory.max or 1,
        # Whole seconds, rounded up: PT0.5S must not become a slot of no time at all.
        duration_s=math.ceil(duration.total_seconds()),
        earliest_start=earliest,
        latest_start=latest,
        prepare_s=prepare_s,
        max_offers=policy.max_offers,
        expires_at=now + timedelta(seconds=policy.offer_expiry_s),
        requested_at=now,
        storage_min=_storage_min(request),
        data=[d.model_dump(mode="json", exclude_none=True) for d in request.data or []],
    )
    return NeedsQuote(request, quote, tuple(p.name for p in pools))


def _pools_that_can_run(
    request: ExecutionRequest, candidates: Sequence[PoolChoice], now: datetime
) -> tuple[tuple[PoolChoice, ...], list[MessageItem]]:
    """The pools whose platform runs the request's executable and stages all its data, or why none."""
    executable = request.executable
    runs = tuple(p for p in candidates if executable is None or executable.kind in p.executable_kinds)
    if executable is not None and not runs:
        return runs, [
            _error(
                now,
                "urn:not-supported",
                "Executables of kind ${kind} cannot run on platform ${platform}",
                kind=executable.kind,
                platform=_platforms(candidates),
            )
        ]
    data_kinds = {item.kind for item in request.data or []}
    pools = tuple(p for p in runs if data_kinds <= p.data_kinds)
    if pools or not runs:
        return pools, []
    # Name each kind that no platform able to run the executable stages; if every kind has one,
    # no single platform stages them all.
    unstaged = sorted(kind for kind in data_kinds if not any(kind in p.data_kinds for p in runs))
    if not unstaged:
        return pools, [
            _error(
                now,
                "urn:not-supported",
                "Data of kinds ${kinds} cannot all be staged on one platform (${platform})",
                kinds=", ".join(sorted(data_kinds)),
                platform=_platforms(runs),
            )
        ]
    return pools, [
        _error(
            now,
            "urn:not-supported",
            "Data of kind ${kind} cannot be staged on platform ${platform}",
            kind=kind,
            platform=_platforms(runs),
        )
        for kind in unstaged
    ]


def _data_product_problems(request: ExecutionRequest, now: datetime) -> list[MessageItem]:
    """An ivo:// identifier or SKAO namespace/objectname must name a Rucio DID (the scheduler looks
    its replicas up); one that does not is refused here, whatever the pool."""
    problems = []
    for index, item in enumerate(request.data or []):
        try:
            data_product_did(item.model_dump(mode="json", by_alias=True, exclude_none=True))
        except NotADataProduct as error:
            name = (item.meta.name if item.meta else None) or f"data[{index}]"
            problems.append(
                _error(
                    now,
                    "urn:invalid-value",
                    "The data resource '${name}' names no SRCNet data product: ${reason}",
                    name=name,
                    reason=error.reason,
                )
            )
    return problems


def _pools_for_owner(
    pools: tuple[PoolChoice, ...], owner: str, now: datetime
) -> tuple[tuple[PoolChoice, ...], list[MessageItem]]:
    """The pools that run code for ``owner``, and why each of the others does not."""
    admitted = tuple(p for p in pools if p.admits(owner))
    refusals = [
        _error(
            now,
            "urn:not-allowed",
            "Pool ${pool} runs code on the broker's host only for owners listed in its allowed_owners, "
            "and you are not one of them",
            pool=p.name,
        )
        for p in pools
        if not p.admits(owner)
    ]
    return admitted, refusals


def _pools_within_rules(
    pools: tuple[PoolChoice, ...], request: ExecutionRequest, now: datetime
) -> tuple[tuple[PoolChoice, ...], list[MessageItem]]:
    """The pools whose own rules admit the request, and why each of the others does not.

    These checks are here, not in the request parser, because they depend on the pool: one pool may
    allow privileged containers or larger storage than another. The parser judges what no pool can
    run (`shared.models.runnable`).
    """
    privileged = isinstance(request.executable, DockerContainer) and request.executable.privileged is True
    storage = _storage_min(request)
    admitted = []
    refusals = []
    for pool in pools:
        reasons = []
        if privileged and not pool.allows_privileged:
            reasons.append(
                _error(
                    now,
                    "urn:not-supported",
                    "Pool ${pool} does not run privileged containers (the executable asks for "
                    "privileged: true; a pool runs them only with allow_privileged = true)",
                    pool=pool.name,
                )
            )
        if pool.max_storage_gib is not None and storage > pool.max_storage_gib:
            reasons.append(
                _error(
                    now,
                    "urn:resource-limit",
                    "Pool ${pool} allows at most ${limit} GiB of storage per request (limits.storage_gib); "
                    "this request asks for ${asked} GiB",
                    pool=pool.name,
                    limit=pool.max_storage_gib,
                    asked=storage,
                )
            )
        if reasons:
            refusals.extend(reasons)
        else:
            admitted.append(pool)
    return tuple(admitted), refusals


def _platforms(pools: Sequence[PoolChoice]) -> str:
    return ", ".join(sorted({p.platform for p in pools}))


def _storage_min(request: ExecutionRequest) -> int:
    """GiB of storage the request needs: its storage resources' minimums."""
    total = 0
    for storage in request.storage or []:
        size = getattr(storage, "size", None)
        total += (size.min or 0) if size is not None else 0
    return total


def _is_absolute_location(location: str) -> bool:
    if location.startswith("/"):
        return True
    scheme = urlparse(location).scheme
    return scheme in {"http", "https", "file"}


def _compute_ranges(compute: Any) -> tuple[MinMax, MinMax]:
    """Missing minimums default to 1; a missing maximum defaults to the minimum."""
    cores = getattr(compute, "cores", None) or MinMax()
    memory = getattr(compute, "memory", None) or MinMax()
    cores_min = cores.min or 1
    memory_min = memory.min or 1
    return (
        MinMax(min=cores_min, max=max(cores.max or cores_min, cores_min)),
        MinMax(min=memory_min, max=max(memory.max or memory_min, memory_min)),
    )


def session_options(phase: Phase) -> list[EnumValueOption]:
    """The updates a client may send now: the draft standard's options, which the prototype never set."""
    legal = sorted(CLIENT_UPDATES.get(phase, frozenset()))
    return [EnumValueOption(path="phase", values=[p.value for p in legal])] if legal else []


def build_offerset(
    request_id: str,
    request: ExecutionRequest,
    holds: Sequence[Hold],
    reasons: Sequence[str | tuple[str, str]],
    expires_at: datetime,
    now: datetime,
    policy: OfferPolicy,
) -> OfferSetResponse:
    """``reasons`` are plain (the default pool's) or ``(pool, reason)`` pairs from several pools."""
    offerset_id = offerset_id_for(request_id)
    name = f"offerset-{offerset_id[:8]}"
    holds = sorted(holds, key=lambda h: (h.start, h.pool, h.session_id))
    if not holds:
        pairs = [r if isinstance(r, tuple) else (policy.pool, r) for r in reasons] or [
            (policy.pool, "no capacity")
        ]
        messages = [
            _error(
                now, "urn:resource-limit", "No offer from pool ${pool}: ${reason}", pool=pool, reason=reason
            )
            for pool, reason in pairs
        ]
        return no_offerset(offerset_id, [*(request.translated or []), *messages], now, policy)
    offers = [
        build_session(request, hold, f"{name}-offer-{index}", expires_at, now, policy)
        for index, hold in enumerate(holds)
    ]
    return OfferSetResponse(
        meta=ComponentMetadata(
            uuid=offerset_id,
            name=name,
            url=f"{policy.public_url}/offersets/{offerset_id}",
            created=now,
            # A legacy document's answer says what was translated (`shared.models.legacy`).
            messages=request.translated,
        ),
        result="YES",
        offers=offers,
    )


def build_session(
    request: ExecutionRequest,
    hold: Hold,
    name: str,
    expires_at: datetime,
    now: datetime,
    policy: OfferPolicy,
) -> ScheduledExecutionSession:
    prepare = timedelta(seconds=hold.prepare_s)
    schedule = LifecycleSchedule(
        preparing=StartDurationInstant(
            start=iso8601.format_instant(hold.start - prepare), duration=iso8601.format_duration(prepare)
        ),
        available=StartDurationInterval(
            start=iso8601.format_interval_instant(hold.start),
            duration=iso8601.format_duration(hold.end - hold.start),
        ),
        releasing=StartDurationInstant(start=iso8601.format_instant(hold.end), duration="PT1S"),
    )
    choice = policy.choice(hold.pool)
    costs = choice.cost_items if choice else None
    metrics = choice.metric_items if choice else None
    compute_in = request.compute if isinstance(request.compute, SimpleComputeResource) else None
    compute = SimpleComputeResource(
        # The pool's ranges on the compute too, where a client comparing offers looks for them:
        # the compute is what the pool charges for, and what its performance metric measures.
        costs=costs,
        metrics=metrics,
        meta=_component_meta(
            hold.session_id, "compute", compute_in.meta if compute_in else None, now, policy
        ),
        phase="INITIALIZING",
        cores=MinMax(min=hold.cores, max=hold.cores),
        memory=MinMax(min=hold.memory_gib, max=hold.memory_gib),
        volumes=compute_in.volumes if compute_in else None,
        schedule=schedule,
    )
    executable = None
    if request.executable is not None:
        executable = request.executable.model_copy(
            update={
                "meta": _component_meta(hold.session_id, "executable", request.executable.meta, now, policy),
                "phase": LifecyclePhase.INITIALIZING,
            }
        )
    return ScheduledExecutionSession(
        costs=costs,
        metrics=metrics,
        meta=ComponentMetadata(
            uuid=hold.session_id,
            name=name,
            url=f"{policy.public_url}/sessions/{hold.session_id}",
            created=now,
            options=session_options(Phase.OFFERED),
        ),
        phase="OFFERED",
        expires=expires_at,
        executable=executable,
        compute=compute,
        storage=_priced_storage(request, choice),
        data=_data_with_schedules(request, hold),
        schedule=schedule,
    )


def _priced_storage(request: ExecutionRequest, choice: PoolChoice | None) -> list[Any] | None:
    """The request's storage, each with what the pool charges for one (when it prices storage)."""
    costs = choice.storage_cost_items if choice else None
    if not request.storage or costs is None:
        return request.storage
    return [item.model_copy(update={"costs": costs}) for item in request.storage]


def _data_with_schedules(request: ExecutionRequest, hold: Hold) -> list[Any] | None:
    """Each data item's own preparation, as the scheduler estimated it from where the data is."""
    if not request.data:
        return None
    start = hold.start - timedelta(seconds=hold.prepare_s)
    staged = []
    for index, item in enumerate(request.data):
        name = (item.meta.name or item.meta.uuid if item.meta else None) or f"data-{index}"
        seconds = hold.steps.get(f"data:{name}")
        if seconds is None:
            staged.append(item)
            continue
        preparing = StartDurationInstant(
            start=iso8601.format_instant(start),
            duration=iso8601.format_duration(timedelta(seconds=round(seconds))),
        )
        staged.append(item.model_copy(update={"schedule": LifecycleSchedule(preparing=preparing)}))
    return staged


def _component_meta(
    session_id: str, role: str, given: ComponentMetadata | None, now: datetime, policy: OfferPolicy
) -> ComponentMetadata:
    component_id = str(uuid.uuid5(uuid.UUID(session_id), role))
    return ComponentMetadata(
        uuid=component_id,
        name=given.name if given else None,
        description=given.description if given else None,
        url=f"{policy.public_url}/sessions/{session_id}/{role}",
        created=now,
    )


# -- updates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionView:
    session_id: str
    owner: str
    phase: Phase
    expires_at: datetime | None
    offerset_id: str


@dataclass(frozen=True)
class UpdateDecision:
    applied: bool
    new_phase: Phase | None = None
    messages: tuple[MessageItem, ...] = ()
    # Phase changes this service owns and must publish: (session_id, phase), each from OFFERED.
    events: tuple[tuple[str, Phase], ...] = ()
    # Phase changes decided here that another service owns and publishes: (session_id, phase),
    # recorded in the read model at once so that no other update can follow them.
    recorded: tuple[tuple[str, Phase], ...] = ()
    release: tuple[str, ...] = ()
    book: bool = False
    forward_cancel: bool = False
    siblings: tuple[str, ...] = field(default=())


def parse_update(body: Mapping[str, Any] | None, now: datetime) -> Phase | MessageItem:
    if not isinstance(body, Mapping):
        return _error(now, "urn:input-syntax-fail", "The update must be a JSON or YAML object")
    kind = body.get("kind")
    path = body.get("path")
    value = body.get("value")
    if kind != "uri:enum-value-update":
        return _error(
            now,
            "urn:not-supported",
            "Updates of kind ${kind} are not supported; use uri:enum-value-update",
            kind=str(kind),
        )
    if path not in {"phase", "/phase"}:
        return _error(
            now, "urn:not-supported", "Only the path 'phase' can be updated, not '${path}'", path=path
        )
    try:
        return Phase(str(value))
    except ValueError:
        return _error(now, "urn:invalid-value", "'${value}' is not a session phase", value=value)


def decide_update(
    session: SessionView,
    requester: str,
    requested: Phase,
    offered_siblings: Sequence[str],
    now: datetime,
) -> UpdateDecision:
    if requester != session.owner:
        return UpdateDecision(
            applied=False,
            messages=(
                _error(
                    now,
                    "urn:forbidden",
                    "Only the owner of session ${session} may update it",
                    session=session.session_id,
                ),
            ),
        )
    try:
        changes = client_update(session.phase, requested)
    except IllegalTransition as illegal:
        legal = ", ".join(sorted(p.value for p in illegal.legal)) or "none"
        return UpdateDecision(
            applied=False,
            new_phase=session.phase,
            messages=(
                _error(
                    now,
                    "urn:illegal-transition",
                    "Session ${session} is ${current}: it cannot become ${requested}; legal updates now: "
                    "${legal}",
                    session=session.session_id,
                    current=session.phase.value,
                    requested=requested.value,
                    legal=legal,
                ),
            ),
        )
    if not changes:
        return UpdateDecision(applied=True, new_phase=session.phase)

    sid = session.session_id
    offered = session.phase is Phase.OFFERED
    if offered and session.expires_at is not None and now >= session.expires_at:
        return UpdateDecision(
            applied=False,
            new_phase=Phase.EXPIRED,
            events=((sid, Phase.EXPIRED),),
            release=(sid,),
            messages=(
                _error(
                    now,
                    "urn:offer-expired",
                    "The offer expired at ${expires}",
                    expires=iso8601.format_instant(session.expires_at),
                ),
            ),
        )
    if requested is Phase.ACCEPTED:
        siblings = tuple(s for s in offered_siblings if s != sid)
        return UpdateDecision(
            applied=True,
            new_phase=Phase.ACCEPTED,
            events=((sid, Phase.ACCEPTED), *((s, Phase.REJECTED) for s in siblings)),
            book=True,
            siblings=siblings,
        )
    if requested is Phase.REJECTED:
        return UpdateDecision(applied=True, new_phase=requested, events=((sid, requested),), release=(sid,))
    if offered:
        # CANCELLED is the launcher's to publish (docs/architecture.md): the cancel goes the way of
        # any other, through the scheduler (which frees the hold) to the launcher.
        return UpdateDecision(
            applied=True, new_phase=requested, recorded=((sid, requested),), forward_cancel=True
        )
    # An accepted session is stopped by the services that hold it; the launcher publishes CANCELLED.
    return UpdateDecision(
        applied=True,
        new_phase=session.phase,
        forward_cancel=True,
        messages=(
            MessageItem.info(
                "urn:cancel-requested", "Cancellation of ${session} requested", time=now, session=sid
            ),
        ),
    )


def expired(sessions: Sequence[SessionView], now: datetime) -> list[str]:
    return [
        s.session_id
        for s in sessions
        if s.phase is Phase.OFFERED and s.expires_at is not None and now >= s.expires_at
    ]


# -- requests -------------------------------------------------------------------------------------


class RequestState(StrEnum):
    """Where a request that waits for the pools stands; the value is what the requests table stores.

    A request answered at once (rejected before any pool was asked) is never stored, so it has none.
    """

    #: The pools were asked; the offer set waits for every answer.
    QUOTING = "QUOTING"
    #: The offer set is out; a late or repeated answer changes nothing.
    ANSWERED = "ANSWERED"


# Wrapped in MappingProxyType so no caller can mutate the shared table at run time.
REQUEST_TRANSITIONS: Mapping[RequestState, frozenset[RequestState]] = MappingProxyType(
    {
        RequestState.QUOTING: frozenset({RequestState.ANSWERED}),
        RequestState.ANSWERED: frozenset(),
    }
)


class IllegalRequestTransition(ValueError):
    def __init__(self, current: RequestState, requested: RequestState) -> None:
        self.current = current
        self.requested = requested
        super().__init__(f"a request cannot go from {current.value} to {requested.value}")


def request_transition(current: RequestState, requested: RequestState) -> bool:
    """True if a request may go from ``current`` to ``requested``; False for a repeat; else raise.

    JetStream delivers at least once, so the same fact (a quote, a dead letter) can arrive after the
    request was answered: repeating it is not an error, and changes nothing.
    """
    if requested is current:
        return False
    if requested not in REQUEST_TRANSITIONS[current]:
        raise IllegalRequestTransition(current, requested)
    return True
