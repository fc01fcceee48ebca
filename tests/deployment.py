"""What the deployment examples' tests share (tests/unit/test_compose.py, test_kubernetes.py): the
environment variables the broker reads, and nats-server's own check of a configuration file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from services.offers.http.settings import HttpSettings
from shared.ops.embedded import nats_server_binary
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def names_the_code_reads() -> frozenset[str]:
    """Every EB_ variable the broker reads: the settings classes' fields, and each name the code
    spells out (typer options' envvars, plugins' settings, the few read with os.environ)."""
    names = {f"EB_{field.upper()}" for cls in (Settings, HttpSettings) for field in cls.model_fields}
    for folder in ("shared", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\bEB_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    return frozenset(names)


def nats_server_test(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``nats-server -t``: parse and check `config` (with `env` only) without starting."""
    return subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
