"""docs/architecture.md says what the code does: its subject table is the grammar of shared/subjects.py."""

from __future__ import annotations

import re
from pathlib import Path

from shared import subjects

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
ROW = re.compile(r"^\| `(eb\.[^`]+)` \| (\w+) \| ([^|]+) \| ([^|]+) \|$")


def documented_subjects() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line.strip())
        if match:
            template, kind, stream, summary = (group.strip() for group in match.groups())
            rows[template] = (kind, stream, summary)
    return rows


def test_the_subject_table_is_the_grammar() -> None:
    expected = {
        p.template: (p.kind.value, p.stream or "— (core request/reply)", p.summary) for p in subjects.PATTERNS
    }
    assert documented_subjects() == expected


def test_the_architecture_page_names_no_missing_module() -> None:
    # Every `shared/…` or `services/…` path the page points a reader to exists.
    root = ARCHITECTURE.parents[1]
    text = ARCHITECTURE.read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:shared|services|tests)/[\w/.-]+?)`", text))
    missing = sorted(p for p in paths if "<" not in p and not (root / p).exists())
    assert missing == []
