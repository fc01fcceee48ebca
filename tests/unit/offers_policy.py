"""The offers policy the unit tests decide with: the service's defaults (see services/offers/main.py),
one pool on the local platform with what the installed local plugin declares it runs, and a fixed
clock."""

from __future__ import annotations

from datetime import UTC, datetime

from services.offers.domain import OfferPolicy, PoolChoice
from shared.platforms.registry import capabilities

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LOCAL = capabilities("local")
POLICY = OfferPolicy(
    pool="local",
    platform="local",
    prepare_s=60,
    max_offers=3,
    offer_expiry_s=300,
    default_duration_s=1800,
    default_window_s=3600,
    public_url="http://broker.test",
    pools=(
        PoolChoice(
            "local", "local", 60, executable_kinds=LOCAL.executable_kinds, data_kinds=LOCAL.data_kinds
        ),
    ),
)
