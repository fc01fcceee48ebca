"""Small JSON records in a session's work folder, which plugins use to find a run again after a
launcher restart: read leniently (a missing or half-written file is "no record"), written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write a temporary file and rename it, so a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=1))
    partial.replace(path)
