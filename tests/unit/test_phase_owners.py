"""One owner per phase: read from the three services' wiring tables, every phase but INITIAL is
published by exactly one service (docs/architecture.md), and only `publish_phase` builds the subject
of a phase event, so none is published without the lifecycle's check."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from nats.aio.msg import Msg

from services.launcher import handlers as launcher
from services.launcher.driver import Drivers
from services.offers import handlers as offers
from services.scheduler import handlers as scheduler
from shared import subjects
from shared.bus.wiring import Wiring
from shared.lifecycle import Phase
from shared.pools import Pool
from tests.unit.offers_policy import POLICY

ROOT = Path(__file__).resolve().parents[2]
POOLS = ("local", "gpu")


async def _answer_pools(msg: Msg) -> None:
    """The scheduler's pools reply; never called here."""


def wirings(tmp_path: Path) -> list[Wiring]:
    """The three tables as each service's `main.build` makes them, from minimal handler objects."""
    pools = [Pool(name=name, platform="local", cores=4, memory_gib=16) for name in POOLS]
    drivers = Drivers(None, {}, tmp_path)
    return [
        offers.wiring(offers.OffersHandlers(POLICY), POOLS),
        scheduler.wiring(
            {pool.name: scheduler.SchedulerHandlers(pool, hold_grace_s=60) for pool in pools}, _answer_pools
        ),
        launcher.wiring([launcher.LauncherHandlers(drivers, pool.name, pool.platform) for pool in pools]),
    ]


def announced(wiring: Wiring) -> set[Phase]:
    """The phases a service publishes: its phase events, and OFFERED for the offer sets (a session
    enters OFFERED in the offer set that offers it, with no event of its own)."""
    phases = {Phase(p.fixed["phase"]) for p in wiring.publishes if p.pattern is subjects.SESSION}
    if any(p.pattern is subjects.OFFERSET for p in wiring.publishes):
        phases.add(Phase.OFFERED)
    return phases


def test_every_phase_but_initial_has_exactly_one_publishing_service(tmp_path: Path) -> None:
    tables = wirings(tmp_path)
    assert [w.service for w in tables] == ["offers", "scheduler", "launcher"]
    publishers = Counter(phase for wiring in tables for phase in announced(wiring))
    assert {phase: n for phase, n in publishers.items() if n != 1} == {}
    assert set(publishers) == set(Phase) - {Phase.INITIAL}


def test_the_owners_are_the_ones_written_down(tmp_path: Path) -> None:
    wired = {phase: wiring.service for wiring in wirings(tmp_path) for phase in announced(wiring)}
    table = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    # The rows of the owners table: | PHASE | owner | where | … (INITIAL's owner is "—").
    written = {
        Phase(phase): owner
        for phase, owner in re.findall(r"^\| ([A-Z]+) \| ([a-z]+) \|", table, re.MULTILINE)
    }
    assert written == wired
    assert set(wired.values()) == {"offers", "scheduler", "launcher"}


def test_only_publish_phase_builds_a_phase_event_subject() -> None:
    # Anything else publishing on eb.sessions.… would skip the lifecycle's check.
    builders = re.compile(r"\bsession_event\(|\bSESSION\.format\(|phase_msg_id\(")
    found = sorted(
        str(path.relative_to(ROOT))
        for folder in ("services", "shared")
        for path in (ROOT / folder).rglob("*.py")
        if path != ROOT / "shared" / "subjects.py"  # where the builders are defined
        and any(builders.search(line) and "def " not in line for line in path.read_text("utf-8").splitlines())
    )
    assert found == ["shared/bus/events.py"]
