"""The offers policy the unit tests decide with: the service's defaults (see services/offers/main.py)
and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

from services.offers.domain import OfferPolicy

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = OfferPolicy(
    pool="local",
    platform="local",
    prepare_s=60,
    max_offers=3,
    offer_expiry_s=300,
    default_duration_s=1800,
    default_window_s=3600,
    public_url="http://broker.test",
)
