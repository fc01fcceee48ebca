"""Sites over leaf nodes (issue 14, item 2): a pool's scheduler and launcher run at its site behind a
leaf ``nats-server``; only offers (and the streams) are at the hub. Real servers, every service a
process of its own; the link between site and hub is a relay the tests can cut (`Link`)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from shared import subjects
from shared.bus.login import identity
from shared.bus.permissions import inbox_prefix
from shared.client import BrokerClient, wait_for_services
from shared.lifecycle import Phase
from shared.models import LOCAL_COMMAND_KIND
from shared.ops.embedded import SERVICES, EmbeddedBroker, free_port, nats_server_binary
from shared.ops.link import Link
from shared.ops.secured import SecuredBus
from shared.ops.site import HUB_DOMAIN, SITE_SERVICES, SiteRegistry
from shared.ops.site_broker import SiteBroker
from tests.conftest import broker_env, local_pool_access
from tests.e2e.helpers import HAPPY_PHASES, follow_until_running, one_core_request, phase_event_counts

pytestmark = pytest.mark.e2e
#: The quote deadline at the hub: a request for a pool whose site is cut off is answered NO by then.
QUOTE_TIMEOUT_S = 3.0
SITE = "ral"
SITE_POOL = f"""
[[pools]]
name = "at-ral"
platform = "local"
site = "UKSRC-RAL"
cores = 8
memory_gib = 16
grid_s = 1
prepare_s = 0
{local_pool_access()}"""
#: The hub's own pool runs code for nobody, so every offer a user gets comes from the site.
HUB_POOLS = f"""
[[pools]]
name = "at-hub"
platform = "local"
cores = 2
memory_gib = 4
grid_s = 1
{SITE_POOL}"""


def sleeper(seconds: float) -> dict[str, object]:
    command = [sys.executable, "-c", f"import time; time.sleep({seconds})"]
    return {"kind": LOCAL_COMMAND_KIND, "command": command}


@dataclass
class Federation:
    hub: EmbeddedBroker
    site: SiteBroker
    link: Link


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """One hub and one site for the module (they take half a minute to start on a busy machine);
    the test that cuts the link mends it before it ends."""
    tmp_path = tmp_path_factory.mktemp("federation")
    (tmp_path / "hub-pools.toml").write_text(HUB_POOLS)
    (tmp_path / "site-pools.toml").write_text(SITE_POOL)
    hub_dir = tmp_path / "hub"
    # The hub's operator registers the site and hands it its key (`broker site-key`).
    key = SiteRegistry(SecuredBus(hub_dir)).add(SITE, tmp_path / "site-pools.toml")
    env = {"EB_QUOTE_TIMEOUT_S": str(QUOTE_TIMEOUT_S)}
    hub = EmbeddedBroker(
        hub_dir, env=broker_env(EB_POOLS=str(tmp_path / "hub-pools.toml"), **env), leafnode_port=free_port()
    )
    assert hub.leafnode_port is not None
    link = Link(hub.leafnode_port)
    site_pools, site_dir = tmp_path / "site-pools.toml", tmp_path / "site"
    site = SiteBroker(SITE, link.url, site_pools, key, site_dir, env=broker_env(**env))
    try:
        hub.start()
        link.mend()
        site.start()
        asyncio.run(wait_for_services(hub.url, SERVICES, timeout=60, credentials=hub.operator()))
        asyncio.run(wait_for_services(site.url, SITE_SERVICES, timeout=60, credentials=site.operator()))
        yield Federation(hub, site, link)
    finally:
        site.stop()
        link.cut()
        hub.stop()


@pytest.fixture
async def alice(federation: Federation) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(federation.hub.url, federation.hub.login("alice"), reconnect=True) as client:
        yield client


async def test_a_session_on_a_site_pool_runs_to_completed(
    federation: Federation, alice: BrokerClient
) -> None:
    offerset = await alice.submit(one_core_request(sleeper(0.5)))
    assert offerset.result == "YES", offerset.messages
    session_id = (offerset.offers or [])[0].meta.uuid  # type: ignore[union-attr]
    assert session_id is not None
    assert (await alice.accept(session_id)).applied
    phases = [event.phase async for event in alice.events(session_id, until_done=True, idle_timeout=30)]
    assert tuple(phases) == HAPPY_PHASES
    # The site's launcher ran it: its store knows the session, the hub's does not.
    assert _known(federation.site.data_dir / "launcher" / "launcher.sqlite", session_id)
    assert not _known(federation.hub.data_dir / "launcher" / "launcher.sqlite", session_id)


def _known(store: Path, session_id: str) -> bool:
    """Whether a launcher's store ever said something about the session (its outbox keeps a day)."""
    with sqlite3.connect(store) as db:
        query = "SELECT count(*) FROM outbox WHERE CAST(payload AS TEXT) LIKE ?"
        return bool(db.execute(query, (f"%{session_id}%",)).fetchone()[0])


async def test_a_site_reaches_only_its_own_pools_subjects(
    federation: Federation, alice: BrokerClient
) -> None:
    """A compromised site (its operator's key: everything on the site's own server) still has only
    the site's permissions on the hub."""
    site, hub = federation.site, federation.hub
    # Replies cross the link only into the site's services' inboxes: it borrows the scheduler's.
    inbox = {"inbox_prefix": inbox_prefix(identity("scheduler", SITE))}
    nc = await nats.connect(site.url, **{**site.operator().connect_options(), **inbox})
    try:
        js = nc.jetstream(domain=HUB_DOMAIN)
        # Its own durables answer (the link works): the refusals below are the permissions.
        own = await js.consumer_info(subjects.COMMANDS_STREAM, "scheduler-at-ral")
        assert own.name == "scheduler-at-ral"
        with pytest.raises(nats.errors.Error):
            await js.consumer_info(subjects.COMMANDS_STREAM, "scheduler-at-hub", timeout=1)
        forged = {
            subjects.scheduler_command("at-hub", subjects.SchedulerVerb.BOOK): b"{}",
            subjects.launcher_command("at-hub", subjects.LauncherVerb.LAUNCH): b"{}",
            subjects.request(alice.owner, "forged"): b"{}",
            subjects.update(alice.owner, "forged"): b"{}",
        }
        for subject, payload in forged.items():
            with pytest.raises(nats.errors.Error):
                await js.publish(subject, payload, timeout=1)
        # Nothing of other pools, users or the hub's services reaches the site.
        overheard: list[str] = []

        async def overhear(msg: Msg) -> None:
            overheard.append(msg.subject)

        others = ("eb.requests.>", "eb.offersets.>", "eb.updates.>", "eb.replies.>", "eb.dead.>")
        others += ("eb.scheduler.at-hub.>", "eb.launcher.at-hub.>", "eb.health.>", "eb.info.>")
        others += (f"{inbox_prefix(alice.owner)}.>", "_INBOX_scheduler.>", "_INBOX_offers.>", "_INBOX_http.>")
        for subject in others:
            await nc.subscribe(subject, cb=overhear)
        await nc.flush()
        await asyncio.sleep(0.5)  # the leaf tells the hub of the new interest
        offerset = await alice.submit(one_core_request(sleeper(0.1)))
        assert offerset.result == "YES"
        await asyncio.sleep(0.5)
        assert overheard == []
    finally:
        await nc.close()
    stored = await _stored_subjects(hub)
    assert not [subject for subject in stored if "at-hub" in subject or "forged" in subject]
    # The site's own server admits only its keys.
    with pytest.raises(nats.errors.Error):
        await nats.connect(site.url, allow_reconnect=False, connect_timeout=2)
    # The site's key is a leaf's only: as a client of the hub it is refused.
    with pytest.raises(nats.errors.Error):
        await nats.connect(hub.url, nkeys_seed=str(site.key_file), allow_reconnect=False, connect_timeout=2)


async def _stored_subjects(hub: EmbeddedBroker) -> list[str]:
    nc = await nats.connect(hub.url, **hub.operator().connect_options())
    try:
        js = nc.jetstream()
        found: list[str] = []
        for stream in (subjects.COMMANDS_STREAM, subjects.EVENTS_STREAM):
            info = await js.stream_info(stream, subjects_filter=">")
            found += list((info.state.subjects or {}).keys())
        return found
    finally:
        await nc.close()


@pytest.mark.faults
async def test_a_cut_link_delays_a_sites_events_and_its_pools_answer_no(
    federation: Federation, alice: BrokerClient
) -> None:
    followed = await follow_until_running(alice, one_core_request(sleeper(3)))
    session_id, seen = followed.session_id, followed.seen
    federation.link.cut()
    try:
        await _while_cut(federation, alice, session_id, seen)
    finally:
        federation.link.mend()
    await asyncio.wait_for(followed.follower, timeout=30)
    assert tuple(seen) == HAPPY_PHASES
    counts = await phase_event_counts(federation.hub, session_id)
    assert set(HAPPY_PHASES) <= set(counts) and all(n == 1 for n in counts.values()), counts


async def _while_cut(federation: Federation, alice: BrokerClient, session_id: str, seen: list[str]) -> None:
    loop = asyncio.get_running_loop()
    asked = loop.time()
    refused = await alice.submit(one_core_request(sleeper(0.1)))
    waited = loop.time() - asked
    assert refused.result == "NO"
    assert "at-ral" in str(refused.meta.messages)
    assert waited < QUOTE_TIMEOUT_S + 3
    # The session carries on at the site; its end waits in the launcher's outbox, not lost.
    outbox = federation.site.data_dir / "launcher" / "launcher.sqlite"
    ended = subjects.session_event(alice.owner, session_id, Phase.COMPLETED.value)
    deadline = loop.time() + 30
    while not _waiting(outbox, ended):
        assert loop.time() < deadline, seen
        await asyncio.sleep(0.2)
    assert Phase.COMPLETED.value not in seen


def _waiting(store: Path, subject: str) -> bool:
    with sqlite3.connect(store) as db:
        query = "SELECT count(*) FROM outbox WHERE subject = ? AND sent_at IS NULL"
        return bool(db.execute(query, (subject,)).fetchone()[0])


def test_a_login_cannot_join_the_hub_as_a_leaf_node(federation: Federation, tmp_path: Path) -> None:
    """The callout admits people, not servers: alice's good password on the leafnode port is refused."""
    hub = federation.hub
    assert hub.leafnode_port is not None
    login = hub.login("alice").password
    assert login is not None
    password = login.get_secret_value()
    config = tmp_path / "rogue.json"
    remote = {"url": f"nats://alice:{password}@127.0.0.1:{hub.leafnode_port}", "account": "APP"}
    port = free_port()
    document = {"listen": f"127.0.0.1:{port}", "accounts": {"APP": {}}, "leafnodes": {"remotes": [remote]}}
    config.write_text(json.dumps(document))
    log = tmp_path / "rogue.log"
    with log.open("wb") as out:
        rogue = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while "Authorization Violation" not in log.read_text():
            assert rogue.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        # Refused for being a leaf, not for the password (it is alice's own).
        assert "a leaf node connects with a site key" in (hub.data_dir / "callout.log").read_text()
    finally:
        rogue.terminate()
        rogue.wait(10)
