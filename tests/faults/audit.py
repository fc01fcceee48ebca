"""What every fault test asserts of a run's report, and the seed that makes its kill plan."""

from __future__ import annotations

import os
import random


def seed() -> int:
    # Random by default so repeated CI runs cover different kill moments; printed to reproduce.
    value = int(os.environ.get("EB_FAULTS_SEED", random.randrange(1_000_000)))
    print(f"EB_FAULTS_SEED={value}")
    return value


def check_report(summary: dict[str, object], sessions: int) -> None:
    """Every request answered, every session completed once, nothing lost, doubled or stuck."""
    assert summary["answered"] == sessions, summary
    assert summary["lost"] == 0, summary
    assert summary["duplicated"] == 0, summary
    assert summary["stuck"] == 0, summary
    assert summary["failed"] == 0, summary
    assert summary["completed"] == sessions, summary
    assert summary["problems"] == [], summary
