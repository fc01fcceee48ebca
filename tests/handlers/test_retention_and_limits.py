"""Bounded growth in each service's tables: finished sessions' rows (and the launcher's work
directories) go after the retention, live ones stay, with the clock the test gives the timer; and
the per-owner limits of the offers service, each a NO or a refusal that names its limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from services.launcher import store as launcher_tables
from services.launcher.pruning import launcher_pruner, work_dir_of
from services.offers import handlers as offers_service
from services.offers import store as offers_tables
from services.offers.handlers import OffersHandlers
from services.offers.limits import LIMIT_KIND, OwnerLimits
from services.offers.reconcile import rebook_stale_accepts
from services.scheduler import store as scheduler_tables
from services.scheduler.domain import Reservation
from services.scheduler.states import ReservationState
from shared import subjects
from shared.bus.retention import Pruner, Retention, pruning_timer
from shared.bus.store import Transaction
from shared.lifecycle import Phase
from shared.messages import BookSession, UpdateResult
from shared.models import OfferSetResponse
from shared.subjects import SchedulerVerb
from tests.handlers.harness import NOW, OWNER, Service, only, subjects_of
from tests.handlers.units import EAST, TWO_POOLS, WEST, Launcher, Offers, Scheduler, hold, notebook_request

RETENTION = Retention(days=30)
START = NOW + timedelta(minutes=10)


async def prune_at(unit: Service[object], pruner: Pruner, at: datetime) -> None:
    """The service's pruning timer, ticking at ``at``."""
    await unit.run(pruning_timer(pruner, RETENTION).ticker, at)


async def offered(offers: Offers, request_id: str, at: datetime = NOW) -> list[str]:
    """Request ``request_id`` and answer it with a hold from each pool: its offered session ids."""
    await offers.request(notebook_request(), request_id, at=at)
    east, west = hold(EAST, START), hold(WEST, START + timedelta(hours=1))
    await offers.quoted(EAST, request_id, holds=[east])
    sent = await offers.quoted(WEST, request_id, holds=[west])
    assert only(sent, OfferSetResponse).result == "YES"
    return [east.session_id, west.session_id]


async def count(unit: Service[object], table: str) -> int:
    return int((await unit.rows(f"SELECT COUNT(*) FROM {table}"))[0][0])


# -- offers -----------------------------------------------------------------------------------------


async def test_offers_prunes_finished_sessions_and_their_request_after_the_retention(offers: Offers) -> None:
    done, sibling = await offered(offers, "r-done")
    await offers.update(done, Phase.ACCEPTED)  # the sibling is rejected: finished too
    await offers.report(done, Phase.COMPLETED)
    live = await offered(offers, "r-live")
    await offers.update(live[0], Phase.ACCEPTED)
    await offers.report(live[0], Phase.RUNNING)

    # A day before the retention ends nothing goes.
    await prune_at(offers, offers_tables.prune_finished, NOW + timedelta(days=29))
    assert await count(offers, "sessions") == 4 and await count(offers, "offersets") == 2

    await prune_at(offers, offers_tables.prune_finished, NOW + timedelta(days=31))
    remaining = {r[0]: Phase(r[1]) for r in await offers.rows("SELECT session_id, phase FROM sessions")}
    # The running session stays, and so does its offer set; its rejected sibling is finished.
    assert remaining == {live[0]: Phase.RUNNING}
    offersets = [r[0] for r in await offers.rows("SELECT request_id FROM offersets")]
    assert offersets == ["r-live"]
    assert sibling not in remaining


async def test_a_request_still_waiting_for_quotes_is_not_pruned(offers: Offers) -> None:
    await offers.request(notebook_request(), "r-waiting")
    await prune_at(offers, offers_tables.prune_finished, NOW + timedelta(days=365))
    assert [r[0] for r in await offers.rows("SELECT state FROM requests")] == ["QUOTING"]


@pytest.fixture
async def limited() -> AsyncIterator[Offers]:
    """Offers with at most 3 holds and 1 live session per owner (a request gets 2 offers)."""
    handlers = OffersHandlers(TWO_POOLS, OwnerLimits(max_holds=3, max_live_sessions=1))
    wiring = offers_service.wiring(handlers, [p.name for p in TWO_POOLS.pools])
    unit = await Offers.open(offers_tables.SCHEMA, handlers, wiring)
    try:
        yield unit
    finally:
        await unit.close()


async def test_a_request_past_the_owners_hold_limit_is_answered_no_naming_the_limit(limited: Offers) -> None:
    await offered(limited, "r1")
    await offered(limited, "r2")  # 4 holds now: one over, as a request may bring several
    sent = await limited.request(notebook_request(), "r3")
    # Answered at once: no pool is asked for holds the owner may not have.
    assert subjects_of(sent) == [subjects.offerset(OWNER, "r3")]
    offerset = only(sent, OfferSetResponse)
    assert offerset.result == "NO" and offerset.meta is not None
    (message,) = offerset.meta.messages or []
    assert message.kind == LIMIT_KIND
    assert "EB_MAX_HOLDS_PER_OWNER" in (message.message or "") and "3" in (message.message or "")


async def test_holds_let_go_make_room_again(limited: Offers) -> None:
    first = await offered(limited, "r1")
    await offered(limited, "r2")
    for session_id in first:
        await limited.update(session_id, Phase.REJECTED)
    sent = await limited.request(notebook_request(), "r3")
    assert subjects_of(sent) == [
        subjects.scheduler_command(pool, SchedulerVerb.QUOTE) for pool in (EAST, WEST)
    ]


async def test_an_accept_past_the_owners_live_session_limit_is_refused_naming_the_limit(
    limited: Offers,
) -> None:
    first = await offered(limited, "r1")
    second = await offered(limited, "r2")
    assert only((await limited.update(first[0], Phase.ACCEPTED))[-1:], UpdateResult).applied
    sent = await limited.update(second[0], Phase.ACCEPTED, update_id="u-over")
    result = only(sent, UpdateResult)  # no event, no booking: only the refusal
    assert not result.applied
    (message,) = result.messages
    assert message.kind == LIMIT_KIND and "EB_MAX_LIVE_SESSIONS_PER_OWNER" in (message.message or "")
    assert await limited.phase(second[0]) is Phase.OFFERED
    # Once the live session has finished, the same accept goes through.
    await limited.report(first[0], Phase.COMPLETED)
    again = await limited.update(second[0], Phase.ACCEPTED, update_id="u-again")
    assert again[-1].as_(UpdateResult).applied


# -- scheduler --------------------------------------------------------------------------------------


async def reservation(
    scheduler: Scheduler, session_id: str, to: ReservationState | None, at: datetime
) -> None:
    async def work(tx: Transaction) -> None:
        slot = Reservation(session_id, START, START + timedelta(hours=1), 1, 1, 0)
        await scheduler_tables.insert_hold(tx, scheduler.pool, slot, "r", OWNER, 0, START)
        if to is ReservationState.RELEASED:
            await scheduler_tables.set_state(tx, session_id, ReservationState.HELD, to)
        elif to is ReservationState.ENDED:
            await scheduler_tables.set_state(tx, session_id, ReservationState.HELD, ReservationState.BOOKED)
            await scheduler_tables.set_state(tx, session_id, ReservationState.BOOKED, to)

    await scheduler.run(work, at)


async def test_scheduler_prunes_ended_and_released_reservations_after_the_retention(
    scheduler: Scheduler,
) -> None:
    await reservation(scheduler, "ended", ReservationState.ENDED, NOW)
    await reservation(scheduler, "released", ReservationState.RELEASED, NOW)
    await reservation(scheduler, "held", None, NOW)
    await reservation(scheduler, "ended-lately", ReservationState.ENDED, NOW + timedelta(days=20))

    await prune_at(scheduler, scheduler_tables.prune_finished, NOW + timedelta(days=29))
    assert await count(scheduler, "reservations") == 4
    await prune_at(scheduler, scheduler_tables.prune_finished, NOW + timedelta(days=31))
    kept = sorted(r[0] for r in await scheduler.rows("SELECT session_id FROM reservations"))
    assert kept == ["ended-lately", "held"]


# -- launcher ---------------------------------------------------------------------------------------


async def run_in(launcher: Launcher, session_id: str, phase: Phase, at: datetime) -> None:
    async def work(tx: Transaction) -> None:
        run = launcher_tables.Run(session_id, OWNER, "local", Phase.PREPARING, {}, None, None, {})
        await launcher_tables.insert(tx, run)
        await launcher_tables.set_phase(tx, session_id, phase)

    await launcher.run(work, at)


async def test_launcher_prunes_finished_runs_with_their_work_directories(
    launcher: Launcher, tmp_path: Path
) -> None:
    root = tmp_path / "sessions"
    for session_id, phase in (
        ("done", Phase.COMPLETED),
        ("failed", Phase.FAILED),
        ("running", Phase.RUNNING),
    ):
        await run_in(launcher, session_id, phase, NOW)
        (root / session_id).mkdir(parents=True)
        (root / session_id / "output.txt").write_text("x")
    outside = tmp_path / "keep"
    outside.mkdir()
    (root / "linked").symlink_to(outside)  # a link in the root is removed, never followed
    await run_in(launcher, "linked", Phase.CANCELLED, NOW)

    pruner = launcher_pruner(root)
    await prune_at(launcher, pruner, NOW + timedelta(days=29))
    assert sorted(p.name for p in root.iterdir()) == ["done", "failed", "linked", "running"]

    await prune_at(launcher, pruner, NOW + timedelta(days=31))
    assert [p.name for p in root.iterdir()] == ["running"]
    assert [r[0] for r in await launcher.rows("SELECT session_id FROM runs")] == ["running"]
    assert outside.is_dir()


@pytest.mark.parametrize("session_id", ["", ".", "..", "../x", "a/b", "/etc"])
def test_a_session_id_that_is_no_plain_name_names_no_work_directory(session_id: str, tmp_path: Path) -> None:
    assert work_dir_of(tmp_path, session_id) is None


def test_a_plain_session_id_names_its_directory_under_the_root(tmp_path: Path) -> None:
    assert work_dir_of(tmp_path, "0b6f") == tmp_path / "0b6f"


async def counted(offers: Offers) -> offers_tables.OwnerUse:
    """The owner's holds and live sessions counted from the sessions themselves."""
    rows = await offers.rows("SELECT phase FROM sessions WHERE owner = ?", (OWNER,))
    phases = [Phase(r[0]) for r in rows]
    live = {Phase.ACCEPTED, Phase.WAITING, Phase.PREPARING, Phase.AVAILABLE, Phase.RUNNING, Phase.RELEASING}
    return offers_tables.OwnerUse(phases.count(Phase.OFFERED), sum(p in live for p in phases))


async def test_the_kept_counts_follow_every_phase_change_and_prune(offers: Offers) -> None:
    first = await offered(offers, "r1")
    second = await offered(offers, "r2")
    assert await use_of(offers) == await counted(offers) == offers_tables.OwnerUse(4, 0)
    await offers.update(first[0], Phase.ACCEPTED)
    await offers.report(first[0], Phase.RUNNING)
    await offers.report(first[0], Phase.RUNNING)  # a repeated phase changes no count
    assert await use_of(offers) == await counted(offers) == offers_tables.OwnerUse(2, 1)
    await offers.update(second[1], Phase.REJECTED)
    await offers.report(first[0], Phase.COMPLETED)
    await offers.tick(NOW + timedelta(hours=1))  # the last offer expires
    await prune_at(offers, offers_tables.prune_finished, NOW + timedelta(days=31))
    assert await use_of(offers) == await counted(offers) == offers_tables.OwnerUse(0, 0)


async def use_of(offers: Offers) -> offers_tables.OwnerUse:
    use: list[offers_tables.OwnerUse] = []

    async def read(tx: Transaction) -> None:
        use.append(await offers_tables.owner_use(tx, OWNER))

    await offers.run(read)
    return use[0]


async def test_a_database_from_before_the_kept_counts_is_counted_once_at_open(offers: Offers) -> None:
    await offered(offers, "r1")
    await offers.run(lambda tx: tx.execute("DELETE FROM owner_use"))  # as if from before the table
    await offers.store.apply_schema()
    assert await use_of(offers) == offers_tables.OwnerUse(2, 0)
    await offers.store.apply_schema()  # and never counted twice
    assert await use_of(offers) == offers_tables.OwnerUse(2, 0)


# -- offers' start-up check -------------------------------------------------------------------------


async def test_a_session_left_accepted_gets_its_book_again_at_start(offers: Offers) -> None:
    chosen, _ = await offered(offers, "r1")
    await offers.update(chosen, Phase.ACCEPTED)
    assert await offers.run(lambda tx: rebook_stale_accepts(tx, TWO_POOLS), NOW + timedelta(minutes=5)) == []

    later = NOW + timedelta(minutes=11)
    sent = await offers.run(lambda tx: rebook_stale_accepts(tx, TWO_POOLS), later)
    assert subjects_of(sent) == [subjects.scheduler_command(EAST, SchedulerVerb.BOOK)]
    # A new id: the stream must not drop it as the first book's copy.
    assert sent[0].msg_id == f"book:{chosen}:again:20260301T121100"
    book = only(sent, BookSession)
    assert (book.session_id, book.owner, book.siblings) == (chosen, OWNER, [])
    assert book.executable["location"] == "/nb.ipynb"

    await offers.report(chosen, Phase.WAITING)  # the booking showed: nothing more to send
    assert await offers.run(lambda tx: rebook_stale_accepts(tx, TWO_POOLS), later) == []
