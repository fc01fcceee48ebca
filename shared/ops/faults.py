"""The kill/restart scenario: sessions flow while services (and optionally nats-server) are killed.

It runs against a fresh embedded broker and audits the events stream at the end, so operators can
check the exactly-once promise themselves: every request answered once, every accepted session in
exactly one terminal phase, every (session, phase) event stored exactly once.

With ``kill_active`` (PostgreSQL, ``database_url``) the scheduler and the launcher run as two
processes each, one active and one standby (`shared.bus.lease`); each kill SIGKILLs the active one
of either, and the killed process is restarted (it comes back as the standby). The report gives,
per kill, how long the standby took to apply its first message (`shared.ops.takeover`).

On a cluster (``cluster=3``) one nats-server node can be SIGKILLed too: the leader of one of the two
streams, chosen at random, so that an election always follows. ``NodeFault.KILL`` restarts it on
its store after a few seconds; ``NodeFault.STOP`` leaves it down to the end of the run.

``longest_gap_s`` is the longest time the clients went without any answer while they were waiting
for one: the longest interval between consecutive answers (offer sets and accept results, in the
order they arrived), counted from the first request sent to the end of the last call (one that got
no answer leaves the gap open until then). ``longest_wait_s`` is
the longest wait of one call (a submit or an accept, resends included).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import nats
import stamina
from nats.js.api import DeliverPolicy

from shared import subjects
from shared.auth import owners
from shared.auth.credentials import Credentials
from shared.bus.publishing import TRANSIENT
from shared.bus.servers import server_urls, unreported
from shared.client import BrokerClient, BrokerTimeout, wait_for_services
from shared.lifecycle import TERMINAL, Phase
from shared.ops import takeover
from shared.ops.embedded import SERVICES, EmbeddedBroker
from shared.subjects import SubjectError

LOCAL_COMMAND_KIND = "urn:execution-broker:kinds/executable/local-command"
#: The one owner every session of a fault run belongs to.
OWNER = "faults"
#: The owner the bus gives that local user, which names its subjects.
OWNER_TOKEN = owners.local(OWNER).token

Progress = Callable[[str], None]
T = TypeVar("T")


class NodeFault(Enum):
    """What happens to one node of a cluster during the run."""

    KILL = "kill"  # SIGKILL, restarted on its store a few seconds later
    STOP = "stop"  # SIGKILL, left down to the end of the run


def zero_time_request() -> dict[str, Any]:
    return {
        "executable": {"kind": LOCAL_COMMAND_KIND, "command": ["true"]},
        "compute": {
            "kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/compute/"
            "simple-compute-resource.yaml",
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT1M"}},
    }


@dataclass
class FaultReport:
    sessions: int
    kills: int
    nats_restarts: int
    answered: int
    lost: int
    duplicated: int
    stuck: int
    completed: int
    failed: int
    refused: int
    seconds: float
    #: The longest time without any answer, and the longest single call (see the module's doc).
    longest_gap_s: float = 0.0
    longest_wait_s: float = 0.0
    cluster: int = 1
    nats_nodes_killed: int = 0
    #: With kill_active: the actives killed, and for each (in order) the seconds from the kill to
    #: the standby serving (answering its health subject: it consumes), and to the first message
    #: it applied (None: not seen; with no message coming in meanwhile there is none).
    active_kills: int = 0
    takeover_s: list[float | None] = field(default_factory=list)
    first_message_s: list[float | None] = field(default_factory=list)
    kill_log: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.stuck == 0
            and self.failed == 0
            and self.answered == self.sessions
        )

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("kill_log")
        data["problems"] = self.problems[:20]
        return data


@dataclass
class _Flow:
    request_ids: list[str] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # request id -> session id
    refused: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    #: When the first request was sent, when each answer came (monotonic), and each call's wait.
    began: float | None = None
    answers: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    async def timed(self, call: Awaitable[T]) -> T:
        """Await one client call, noting when its answer came and how long it was waited for."""
        sent = time.monotonic()
        self.began = sent if self.began is None else min(self.began, sent)
        result = await call
        answered = time.monotonic()
        self.answers.append(answered)
        self.waits.append(answered - sent)
        return result


def longest_gap(began: float | None, answers: list[float], finished: float) -> float:
    """The longest interval without an answer, from ``began`` to ``finished`` (when the last call
    ended: a call that never got its answer leaves the gap open until then)."""
    if began is None:
        return 0.0
    moments = [began, *sorted(answers), max(finished, began)]
    return max(later - earlier for earlier, later in itertools.pairwise(moments))


async def _one_session(client: BrokerClient, flow: _Flow, limit: asyncio.Semaphore, timeout: float) -> None:
    request_id = str(uuid.uuid4())
    flow.request_ids.append(request_id)
    async with limit:
        try:
            offerset = await flow.timed(
                client.submit(zero_time_request(), request_id=request_id, timeout=timeout)
            )
        except BrokerTimeout as exc:
            flow.errors.append(f"request {request_id}: {exc}")
            return
        if offerset.result != "YES" or not offerset.offers or offerset.offers[0].meta is None:
            flow.refused.add(request_id)
            return
        session_id = offerset.offers[0].meta.uuid
        assert session_id is not None
        try:
            result = await flow.timed(client.accept(session_id))
        except BrokerTimeout as exc:
            flow.errors.append(f"accept {session_id}: {exc}")
            return
        if result.applied:
            flow.accepted[request_id] = session_id
        else:
            flow.errors.append(f"accept {session_id} refused: {[m.message for m in result.messages]}")


@dataclass
class _Killed:
    nats_restarts: int = 0
    nodes_killed: int = 0
    #: The takeovers watched after each active was killed (`_kill_active`).
    takeovers: list[asyncio.Task[takeover.Takeover]] = field(default_factory=list)


async def _kill_active(
    broker: EmbeddedBroker,
    database_url: str,
    service: str,
    down_for: float,
    log: list[str],
    began: float,
    killed: _Killed,
) -> None:
    """SIGKILL the process holding ``service``'s lease; watch its standby take over (in the
    background); restart the killed one ``down_for`` seconds later: it comes back as the standby."""
    active = await takeover.active_process(broker, database_url, service, timeout=60.0)
    assert active.proc is not None
    pid = active.proc.pid
    killed_at = takeover.now()
    active.kill()
    killed.takeovers.append(
        asyncio.create_task(takeover.watch_takeover(broker, database_url, service, pid, killed_at))
    )
    log.append(
        f"{time.monotonic() - began:6.1f}s SIGKILL active {active.label} (pid {pid}), down {down_for:.1f}s"
    )
    await asyncio.sleep(down_for)
    active.start()


async def _stream_leader(broker: EmbeddedBroker, rng: random.Random) -> int:
    """The index of the node leading one of the two streams (chosen at random), or a random node
    if the cluster does not say in time."""
    names = [f"n{i + 1}" for i in range(len(broker.nats_nodes))]
    stream = rng.choice([subjects.COMMANDS_STREAM, subjects.EVENTS_STREAM])
    with contextlib.suppress(Exception):
        nc = await nats.connect(
            server_urls(broker.url),
            connect_timeout=2,
            allow_reconnect=False,
            error_cb=unreported,
            **broker.operator().connect_options(),
        )
        try:
            info = await nc.jetstream().stream_info(stream)
            if info.cluster is not None and info.cluster.leader in names:
                return names.index(info.cluster.leader)
        finally:
            await nc.close()
    return rng.randrange(len(names))


async def _kill_node(
    broker: EmbeddedBroker, fault: NodeFault, rng: random.Random, log: list[str], began: float
) -> bool:
    """SIGKILL a stream leader's node; restart it on its store a few seconds later (KILL) or not
    (STOP). True when it was restarted."""
    index = await _stream_leader(broker, rng)
    node = broker.nats_nodes[index]
    node.stop(signal.SIGKILL)
    if fault is NodeFault.STOP:
        log.append(f"{time.monotonic() - began:6.1f}s SIGKILL nats node n{index + 1}, down to the end")
        return False
    down_for = rng.uniform(2.0, 5.0)
    log.append(f"{time.monotonic() - began:6.1f}s SIGKILL nats node n{index + 1}, down {down_for:.1f}s")
    await asyncio.sleep(down_for)
    await asyncio.to_thread(node.start)
    return True


async def _killer(
    broker: EmbeddedBroker,
    kills: int,
    restart_nats: bool,
    window: float,
    rng: random.Random,
    log: list[str],
    stop: asyncio.Event,
    node_fault: NodeFault | None = None,
    active_on: str | None = None,
) -> _Killed:
    """Kill ``kills`` services at random moments spread over ``window`` seconds; restart each. With
    ``restart_nats`` the single nats-server, with ``node_fault`` one node of a cluster, goes too.
    With ``active_on`` (a PostgreSQL URL) each kill is of the active scheduler or launcher."""
    killed = _Killed()
    moments = sorted(rng.uniform(0.05, 0.9) * window for _ in range(kills))
    started = time.monotonic()
    # Every service is killed at least once when there are enough kills; the rest are random.
    victims = takeover.LEASED_SERVICES if active_on is not None else SERVICES
    targets = [victims[i % len(victims)] for i in range(min(kills, len(victims)))]
    targets += [rng.choice(victims) for _ in range(kills - len(targets))]
    rng.shuffle(targets)
    plan: list[tuple[float, str]] = list(zip(moments, targets, strict=True))
    if restart_nats:
        plan.append((rng.uniform(0.3, 0.6) * window, "nats-server"))
    if node_fault is not None:
        plan.append((rng.uniform(0.1, 0.5) * window, "nats-node"))
    plan.sort()
    for moment, target in plan:
        delay = moment - (time.monotonic() - started)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
        down_for = rng.uniform(0.2, 1.5)
        if target == "nats-node":
            assert node_fault is not None
            killed.nodes_killed += 1
            killed.nats_restarts += await _kill_node(broker, node_fault, rng, log, started)
        elif target == "nats-server":
            assert broker.nats is not None
            broker.nats.stop(signal.SIGKILL)
            log.append(f"{time.monotonic() - started:6.1f}s SIGKILL nats-server, down {down_for:.1f}s")
            await asyncio.sleep(down_for)
            await asyncio.to_thread(broker.nats.start)
            killed.nats_restarts += 1
        elif active_on is not None:
            await _kill_active(broker, active_on, target, down_for, log, started, killed)
        else:
            broker.services[target].kill()
            log.append(f"{time.monotonic() - started:6.1f}s SIGKILL {target}, down {down_for:.1f}s")
            await asyncio.sleep(down_for)
            broker.services[target].start()
    return killed


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _seconds(value: float | None) -> str:
    return "(not seen)" if value is None else f"{value:.2f} s"


async def _through_elections(call: Callable[[], Awaitable[T]]) -> T:
    """A JetStream API call, tried again while a cluster elects a leader (timeouts, 503s)."""
    async for attempt in stamina.retry_context(on=TRANSIENT, attempts=None, timeout=60.0, wait_max=1.0):
        with attempt:
            return await call()
    raise AssertionError("unreachable: stamina re-raises the last failure")


async def audit_events(url: str, operator: Credentials) -> tuple[Counter[str], dict[str, list[str]]]:
    """Count every stored event subject; collect each session's phases in stream order."""
    nc = await nats.connect(server_urls(url), error_cb=unreported, **operator.connect_options())
    counts: Counter[str] = Counter()
    phases: dict[str, list[str]] = defaultdict(list)
    try:
        js = nc.jetstream()
        info = await _through_elections(lambda: js.stream_info(subjects.EVENTS_STREAM))
        last = info.state.last_seq
        sub = await _through_elections(
            lambda: js.subscribe(
                ">", stream=subjects.EVENTS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
        )
        seq = 0
        while seq < last:
            msg = await sub.next_msg(timeout=10)
            seq = msg.metadata.sequence.stream
            counts[msg.subject] += 1
            with contextlib.suppress(SubjectError):  # not a session event
                event = subjects.parse_session_event(msg.subject)
                phases[event.session_id].append(event.phase)
        await sub.unsubscribe()
    finally:
        await nc.close()
    return counts, phases


def one_fact(subject: str) -> bool:
    """True for the subjects that carry one fact each: an offer set, an update's result, a phase."""
    for pattern in (subjects.OFFERSET, subjects.UPDATE_RESULT, subjects.SESSION):
        with contextlib.suppress(SubjectError):
            pattern.parse(subject)
            return True
    return False


async def _wait_until_settled(url: str, operator: Credentials, sessions: set[str], deadline: float) -> None:
    """Follow all session events until every accepted session has a terminal phase or time is up."""
    done: set[str] = set()
    nc = await nats.connect(
        server_urls(url),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=unreported,
        **operator.connect_options(),
    )
    try:
        sub = await _through_elections(
            lambda: nc.jetstream().subscribe(
                subjects.session_events(OWNER_TOKEN),
                stream=subjects.EVENTS_STREAM,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
        )
        while not sessions <= done and time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                continue
            event = subjects.parse_session_event(msg.subject)
            if Phase(event.phase) in TERMINAL:
                done.add(event.session_id)
        await sub.unsubscribe()
    finally:
        await nc.close()


async def run_faults(
    data_dir: Path,
    sessions: int = 300,
    kills: int = 6,
    *,
    restart_nats: bool = False,
    concurrency: int = 40,
    seed: int | None = None,
    settle_timeout: float = 180.0,
    durability: str = "fast",
    cluster: int = 1,
    node_fault: NodeFault | None = None,
    kill_active: bool = False,
    database_url: str | None = None,
    progress: Progress = lambda _: None,
) -> FaultReport:
    """``database_url``: the services' state in this PostgreSQL database (an empty one: the run
    refuses one that holds their schemas); ``kill_active`` needs it."""
    if node_fault is not None and cluster < 3:
        raise ValueError("a nats node can be killed only in a cluster: set cluster to 3 or more")
    if restart_nats and cluster > 1:
        raise ValueError("--restart-nats restarts the single nats-server; on a cluster kill a node instead")
    if kill_active and database_url is None:
        raise ValueError(
            "--kill-active runs a standby beside the active scheduler and launcher, which share a "
            "PostgreSQL store: set EB_DATABASE_URL to an empty PostgreSQL database"
        )
    if database_url is not None:
        await takeover.check_empty(database_url)
    rng = random.Random(seed)
    env = {
        # A pool big enough that every session can start at once: the test is about failures,
        # not about waiting for capacity.
        "EB_POOL_CORES": str(max(sessions, 8)),
        "EB_POOL_MEMORY_GIB": str(max(sessions, 8)),
        "EB_MAX_OFFERS": "2",
        "EB_ACK_WAIT_S": "4",
        "EB_MAX_DELIVER": "20",
        "EB_DURABILITY": durability,
        # One owner stands for many users here: the per-owner limits are not what is tested.
        "EB_MAX_HOLDS_PER_OWNER": str(max(sessions * 4, 200)),
        "EB_MAX_LIVE_SESSIONS_PER_OWNER": str(max(sessions * 2, 100)),
        # The built-in pool runs code on this host only for the owners it allows.
        "EB_POOL_ALLOWED_OWNERS": f"local:{OWNER}",
    }
    if database_url is not None:
        env["EB_DATABASE_URL"] = database_url
    # Two processes of each leased service: the active one, and a standby to take over.
    replicas = dict.fromkeys(takeover.LEASED_SERVICES, 2) if kill_active else {}
    broker = EmbeddedBroker(data_dir=data_dir, env=env, cluster=cluster, replicas=replicas)
    started = time.monotonic()
    kill_log: list[str] = []
    flow = _Flow()
    await asyncio.to_thread(broker.start)
    try:
        await wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator())
        progress(
            f"broker up at {broker.url}; {sessions} sessions, {kills} kills"
            + (", one nats-server restart" if restart_nats else "")
            + (f", one nats node: {node_fault.value}" if node_fault is not None else "")
            + (", killing the active scheduler and launcher" if kill_active else "")
        )
        stop_killing = asyncio.Event()
        # Spread the kills over the time the sessions are expected to take (≈ 25 sessions/s here).
        window = max(5.0, sessions / 25)
        killer = asyncio.create_task(
            _killer(
                broker,
                kills,
                restart_nats,
                window,
                rng,
                kill_log,
                stop_killing,
                node_fault,
                database_url if kill_active else None,
            )
        )
        limit = asyncio.Semaphore(concurrency)
        async with BrokerClient(broker.url, broker.login(OWNER), reconnect=True, resend_after=6.0) as client:
            await asyncio.gather(*(_one_session(client, flow, limit, timeout=120) for _ in range(sessions)))
        calls_finished = time.monotonic()
        progress(f"{len(flow.accepted)} sessions accepted after {time.monotonic() - started:.1f} s")
        killed = await killer
        takeovers = list(await asyncio.gather(*killed.takeovers))
        for watched in takeovers:
            kill_log.append(
                f"        {watched.service}: after the kill a standby held the lease in "
                f"{_seconds(watched.lease_s)}, served in {_seconds(watched.serving_s)} and applied "
                f"its first message in {_seconds(watched.first_message_s)}"
            )
        await _wait_until_settled(
            broker.url, broker.operator(), set(flow.accepted.values()), time.monotonic() + settle_timeout
        )
        await asyncio.sleep(1.0)  # let the last relays land before counting
        counts, phases = await audit_events(broker.url, broker.operator())
    finally:
        await asyncio.to_thread(broker.stop)

    problems = list(flow.errors)
    answered = sum(1 for rid in flow.request_ids if counts[subjects.offerset(OWNER_TOKEN, rid)] >= 1)
    # Only subjects that name one fact can be duplicated; the pool facts (quoted, measured) and dead
    # letters share one subject per pool or service.
    once = [(subject, n) for subject, n in counts.items() if one_fact(subject)]
    duplicated = sum(1 for _, n in once if n > 1)
    problems += [f"duplicate: {s} x{n}" for s, n in once if n > 1]
    stuck = 0
    completed = failed = 0
    lost = len(flow.request_ids) - answered
    # The stream is the truth: a session accepted while the client lost its answer still counts.
    accepted = set(flow.accepted.values()) | {sid for sid, seen in phases.items() if "ACCEPTED" in seen}
    for session_id in sorted(accepted):
        seen = phases.get(session_id, [])
        if Phase.ACCEPTED.value not in seen:
            lost += 1
            problems.append(f"lost: session {session_id} has no ACCEPTED event")
        terminal = [p for p in seen if Phase(p) in TERMINAL]
        if not terminal:
            stuck += 1
            problems.append(f"stuck: session {session_id} phases {seen}")
        elif len(set(terminal)) > 1:
            duplicated += 1
            problems.append(f"two endings: session {session_id} phases {seen}")
        completed += terminal.count(Phase.COMPLETED.value) > 0
        failed += terminal.count(Phase.FAILED.value) > 0
    if counts.get(subjects.dead_letter("offers")) or counts.get(subjects.dead_letter("scheduler")):
        problems.append("dead letters were written (see eb.dead.*)")
    return FaultReport(
        sessions=sessions,
        kills=kills,
        nats_restarts=killed.nats_restarts,
        answered=answered,
        lost=lost,
        duplicated=duplicated,
        stuck=stuck,
        completed=completed,
        failed=failed,
        refused=len(flow.refused),
        seconds=round(time.monotonic() - started, 1),
        longest_gap_s=round(longest_gap(flow.began, flow.answers, calls_finished), 2),
        longest_wait_s=round(max(flow.waits, default=0.0), 2),
        cluster=cluster,
        nats_nodes_killed=killed.nodes_killed,
        active_kills=len(takeovers),
        takeover_s=[_rounded(t.serving_s) for t in takeovers],
        first_message_s=[_rounded(t.first_message_s) for t in takeovers],
        kill_log=kill_log,
        problems=problems,
    )
