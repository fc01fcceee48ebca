"""The official AsyncAPI 3.0.0 JSON Schema, and checks of a document against it.

The schema is published in the npm package `@asyncapi/specs` (no PyPI package ships it); it is never
committed here. The first test session that needs it runs `npm pack` and keeps the one file in a
cache inside the virtual environment (`make clean` removes it with the environment).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator  # type: ignore[import-untyped]

from shared.subjects import PATTERNS, is_token

SPECS_PACKAGE = "@asyncapi/specs@6"
SCHEMA_IN_PACKAGE = "package/schemas/3.0.0.json"
SCHEMA_ID = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
NPM_TIMEOUT_S = 180


def cache_file() -> Path:
    return Path(sys.prefix) / "cache" / "asyncapi-specs-6" / "3.0.0.json"


def load_schema(fallback_dir: Path) -> dict[str, Any] | str:
    """The schema, or one line saying why it cannot be had here."""
    for cached in (cache_file(), fallback_dir / "3.0.0.json"):
        if cached.is_file():
            return dict(json.loads(cached.read_text(encoding="utf-8")))
    npm = shutil.which("npm")
    if npm is None:
        return f"the AsyncAPI 3.0.0 JSON Schema needs npm ({SPECS_PACKAGE}) or a copy in {cache_file()}"
    with tempfile.TemporaryDirectory() as work:
        try:
            subprocess.run(
                [npm, "pack", SPECS_PACKAGE, "--pack-destination", work],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT_S,
                check=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            return f"npm pack {SPECS_PACKAGE} failed, so no AsyncAPI 3.0.0 JSON Schema: {exc}"
        (tarball,) = Path(work).glob("*.tgz")
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(SCHEMA_IN_PACKAGE)
            assert member is not None, f"{tarball.name} has no {SCHEMA_IN_PACKAGE}"
            text = member.read().decode("utf-8")
    schema = dict(json.loads(text))
    assert schema.get("$id") == SCHEMA_ID, f"{SPECS_PACKAGE} changed its 3.0.0 schema's $id"
    _keep(text, fallback_dir)
    return schema


def _keep(text: str, fallback_dir: Path) -> None:
    for target in (cache_file(), fallback_dir / "3.0.0.json"):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            partial.write_text(text, encoding="utf-8")
            partial.replace(target)  # whole or not at all, for a concurrent session
            return
        except OSError:
            continue  # a read-only environment: this session's temporary directory then


def problems(validator: Draft7Validator, document: dict[str, Any]) -> list[str]:
    """Every way the document breaks the schema, one line each, most specific first."""
    errors = sorted(validator.iter_errors(document), key=lambda e: -len(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in errors]


def defined(subject: str) -> bool:
    """Whether some pattern defines ``subject``: its fixed tokens, and for each parameter a single
    token, a ``*`` or the parameter's own ``{name}``."""
    tokens = subject.split(".")
    for pattern in PATTERNS:
        if len(tokens) == len(pattern.tokens) and all(
            token == want or (want.startswith("{") and (token in ("*", want) or is_token(token)))
            for token, want in zip(tokens, pattern.tokens, strict=True)
        ):
            return True
    return False


def strings(value: object) -> Iterator[str]:
    """Every string in a JSON document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
