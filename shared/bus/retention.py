"""How long a finished session's rows stay in a service's tables: ``EB_RETENTION_DAYS`` (default 30,
as long as the events stream keeps the session's history).

Each service says what "finished and older than the cutoff" means for its tables (a `Pruner`); the
runtime runs it as a `Timer` of the service's wiring, so it takes the store's lock like any handler
and ``tx.now`` is its clock (a test passes its own). Each round deletes at most `PRUNE_BATCH` rows
per table, so a backlog is worked off over several rounds without one long transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from shared.bus.store import Transaction
from shared.bus.wiring import Timer, Wiring

#: Deletes a service's finished rows last changed before the cutoff; how many went.
Pruner = Callable[[Transaction, datetime, int], Awaitable[int]]

PRUNE_BATCH = 5000
PRUNE_EVERY_S = 600.0


@dataclass(frozen=True)
class Retention:
    days: float = 30.0

    def cutoff(self, now: datetime) -> datetime:
        return now - timedelta(days=self.days)


def pruning_timer(prune: Pruner, retention: Retention, every_s: float = PRUNE_EVERY_S) -> Timer:
    async def tick(tx: Transaction) -> None:
        await prune(tx, retention.cutoff(tx.now), PRUNE_BATCH)

    return Timer("prune-finished", every_s, tick)


def with_pruning(wiring: Wiring, prune: Pruner, retention: Retention) -> Wiring:
    """The wiring with its service's pruning added to its timers."""
    return replace(wiring, timers=(*wiring.timers, pruning_timer(prune, retention)))
