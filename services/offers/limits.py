"""Per-owner limits: how many offers (each a hold on a pool's capacity) and how many accepted,
unfinished sessions one owner may have at once, so that one user cannot fill the pools' ledgers
or the tables alone. Pure: the handler counts (`store.owner_use`) and asks here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.offers.store import OwnerUse
from shared.models import MessageItem

LIMIT_KIND = "urn:limit-exceeded"


@dataclass(frozen=True)
class OwnerLimits:
    """``EB_MAX_HOLDS_PER_OWNER``, ``EB_MAX_LIVE_SESSIONS_PER_OWNER``."""

    max_holds: int = 200
    max_live_sessions: int = 100


def request_refusal(use: OwnerUse, limits: OwnerLimits, now: datetime) -> MessageItem | None:
    """Why a new request gets NO before any pool is asked, or None: its offers would be holds."""
    if use.holds >= limits.max_holds:
        return MessageItem.error(
            LIMIT_KIND,
            "You hold ${holds} offers not yet accepted or rejected; the limit per owner is ${limit} "
            "(EB_MAX_HOLDS_PER_OWNER): reject or let some expire first",
            time=now,
            holds=use.holds,
            limit=limits.max_holds,
        )
    return None


def accept_refusal(use: OwnerUse, limits: OwnerLimits, now: datetime) -> MessageItem | None:
    """Why an accept is refused, or None: it would start one more live session."""
    if use.live_sessions >= limits.max_live_sessions:
        return MessageItem.error(
            LIMIT_KIND,
            "You have ${live} accepted sessions not yet finished; the limit per owner is ${limit} "
            "(EB_MAX_LIVE_SESSIONS_PER_OWNER): wait for some to end or cancel them",
            time=now,
            live=use.live_sessions,
            limit=limits.max_live_sessions,
        )
    return None
