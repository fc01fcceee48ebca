"""The cut-site scenario (`broker faults --cut-site`): a hub, one site behind a leaf link, and the
link cut for a while as sessions flow.

Every session runs on the site's pool (the hub's own pool runs code for nobody). Requests are sent
at a steady pace before, during and after the cut, so the run sees all three: sessions started
before the cut carry on at the site and their events reach the hub once the link is back; requests
made during it are answered ``NO`` (pool unreachable) after the quote deadline; those after it run
as usual. The same audit as `shared.ops.faults` then counts what was lost, stored twice or stuck.

The link is a relay on loopback (`shared.ops.link.Link`), so the cut is real: the site's leaf server
and its services stay up and keep their clients; only the connection to the hub is gone.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from shared import subjects
from shared.client import BrokerClient, wait_for_services
from shared.lifecycle import TERMINAL, Phase
from shared.ops.embedded import SERVICES, EmbeddedBroker, free_port
from shared.ops.faults import (
    OWNER,
    OWNER_TOKEN,
    FaultReport,
    Progress,
    _Flow,
    _one_session,
    _wait_until_settled,
    audit_events,
    longest_gap,
    one_fact,
)
from shared.ops.link import Link
from shared.ops.secured import SecuredBus
from shared.ops.site import SITE_SERVICES, SiteRegistry
from shared.ops.site_broker import SiteBroker

SITE = "faultsite"
SITE_POOL = "at-site"
#: The quote deadline at the hub for the run: a request for the cut-off site is answered NO by then.
QUOTE_TIMEOUT_S = 5.0


def _pools(sessions: int) -> tuple[str, str]:
    """The site's pools file, and the hub's (its own pool, for nobody, and the site's)."""
    size = max(sessions, 8)
    site = f"""
[[pools]]
name = "{SITE_POOL}"
platform = "local"
site = "FAULT-SITE"
cores = {size}
memory_gib = {size}
grid_s = 1
prepare_s = 0
allowed_owners = ["local:{OWNER}"]
"""
    hub = f"""
[[pools]]
name = "at-hub"
platform = "local"
cores = 2
memory_gib = 4
grid_s = 1
{site}"""
    return site, hub


def _write_pools(data_dir: Path, sessions: int) -> None:
    site_pools, hub_pools = _pools(sessions)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "site-pools.toml").write_text(site_pools, encoding="utf-8")
    (data_dir / "hub-pools.toml").write_text(hub_pools, encoding="utf-8")


async def _paced(
    client: BrokerClient, flow: _Flow, sessions: int, window: float, concurrency: int, timeout: float
) -> None:
    """Start the sessions one by one, evenly over ``window`` seconds, at most ``concurrency`` at once."""
    limit = asyncio.Semaphore(concurrency)
    began = time.monotonic()
    tasks = []
    for number in range(sessions):
        delay = began + number * window / sessions - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one_session(client, flow, limit, timeout)))
    await asyncio.gather(*tasks)


async def _cutter(link: Link, at: float, seconds: float, log: list[str], began: float) -> None:
    await asyncio.sleep(at)
    link.cut()
    log.append(f"{time.monotonic() - began:6.1f}s cut the site's leaf link for {seconds:.0f}s")
    await asyncio.sleep(seconds)
    link.mend()
    log.append(f"{time.monotonic() - began:6.1f}s mended the link")


async def _killer(
    hub: EmbeddedBroker, site: SiteBroker, kills: int, window: float, rng: random.Random, log: list[str]
) -> None:
    """SIGKILL ``kills`` services at random moments over ``window`` seconds, each restarted on its
    store: the hub's offers, or the site's scheduler or launcher (cut off or not at the time)."""
    targets = {"offers": hub.services["offers"], **site.services}
    plan = sorted((rng.uniform(0.05, 0.9) * window, rng.choice(sorted(targets))) for _ in range(kills))
    began = time.monotonic()
    for moment, name in plan:
        await asyncio.sleep(max(0.0, moment - (time.monotonic() - began)))
        down_for = rng.uniform(0.2, 1.5)
        await asyncio.to_thread(targets[name].kill)
        where = "hub" if name == "offers" else "site"
        log.append(f"{time.monotonic() - began:6.1f}s SIGKILL {where} {name}, down {down_for:.1f}s")
        await asyncio.sleep(down_for)
        await asyncio.to_thread(targets[name].start)


async def run_cut_site(
    data_dir: Path,
    sessions: int = 300,
    kills: int = 0,
    *,
    cut_s: float = 30.0,
    concurrency: int = 40,
    seed: int | None = None,
    settle_timeout: float = 180.0,
    progress: Progress = lambda _: None,
) -> FaultReport:
    rng = random.Random(seed)
    await asyncio.to_thread(_write_pools, data_dir, sessions)
    env = {
        "EB_QUOTE_TIMEOUT_S": str(QUOTE_TIMEOUT_S),
        "EB_MAX_OFFERS": "2",
        "EB_ACK_WAIT_S": "4",
        "EB_MAX_DELIVER": "20",
        "EB_MAX_HOLDS_PER_OWNER": str(max(sessions * 4, 200)),
        "EB_MAX_LIVE_SESSIONS_PER_OWNER": str(max(sessions * 2, 100)),
    }
    hub_dir = data_dir / "hub"
    # The hub's operator registers the site and hands it its key (`broker site-key`).
    key = SiteRegistry(SecuredBus(hub_dir)).add(SITE, data_dir / "site-pools.toml")
    hub = EmbeddedBroker(
        hub_dir, env={**env, "EB_POOLS": str(data_dir / "hub-pools.toml")}, leafnode_port=free_port()
    )
    assert hub.leafnode_port is not None
    link = Link(hub.leafnode_port)
    site = SiteBroker(SITE, link.url, data_dir / "site-pools.toml", key, data_dir / "site", env=env)
    started = time.monotonic()
    log: list[str] = []
    flow = _Flow()
    try:
        await asyncio.to_thread(hub.start)
        link.mend()
        await asyncio.to_thread(site.start)
        await wait_for_services(hub.url, SERVICES, timeout=60, credentials=hub.operator())
        await wait_for_services(site.url, SITE_SERVICES, timeout=60, credentials=site.operator())
        # Long enough that requests come before, during and after the cut.
        window = max(2 * cut_s + 10.0, sessions / 10)
        cut_at = rng.uniform(0.2, 0.35) * window
        progress(f"hub at {hub.url}, site {SITE} behind {link.url}; {sessions} sessions over {window:.0f} s")
        began = time.monotonic()
        cutter = asyncio.create_task(_cutter(link, cut_at, cut_s, log, began))
        killer = asyncio.create_task(_killer(hub, site, kills, window, rng, log))
        async with BrokerClient(hub.url, hub.login(OWNER), reconnect=True, resend_after=6.0) as client:
            await _paced(client, flow, sessions, window, concurrency, timeout=120 + cut_s)
        calls_finished = time.monotonic()
        await cutter
        await killer
        progress(f"{len(flow.accepted)} sessions accepted, {len(flow.refused)} refused")
        await _wait_until_settled(
            hub.url, hub.operator(), set(flow.accepted.values()), time.monotonic() + settle_timeout
        )
        await asyncio.sleep(1.0)  # let the last relays land before counting
        counts, phases = await audit_events(hub.url, hub.operator())
    finally:
        link.mend()  # so the site's services stop cleanly
        await asyncio.to_thread(site.stop)
        link.cut()
        await asyncio.to_thread(hub.stop)

    problems = list(flow.errors)
    answered = sum(1 for rid in flow.request_ids if counts[subjects.offerset(OWNER_TOKEN, rid)] >= 1)
    once = [(subject, n) for subject, n in counts.items() if one_fact(subject)]
    duplicated = sum(1 for _, n in once if n > 1)
    problems += [f"duplicate: {s} x{n}" for s, n in once if n > 1]
    lost = len(flow.request_ids) - answered
    stuck = completed = failed = 0
    accepted = set(flow.accepted.values()) | {sid for sid, seen in phases.items() if "ACCEPTED" in seen}
    for session_id in sorted(accepted):
        seen = phases.get(session_id, [])
        terminal = [p for p in seen if Phase(p) in TERMINAL]
        if not terminal:
            stuck += 1
            problems.append(f"stuck: session {session_id} phases {seen}")
        elif len(set(terminal)) > 1:
            duplicated += 1
            problems.append(f"two endings: session {session_id} phases {seen}")
        completed += Phase.COMPLETED.value in terminal
        failed += Phase.FAILED.value in terminal
    return FaultReport(
        sessions=sessions,
        kills=kills,
        nats_restarts=0,
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
        kill_log=sorted(log),
        problems=problems,
    )
