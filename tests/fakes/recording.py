"""The record of the API requests a fake server received (launcher-targets.md §5).

Every fake keeps the same record of a request, so a test reads any of them alike:

    {"method", "path", "query" (as sent), "params" ([name, value] pairs of the query),
     "headers" (lower-case names, secrets redacted), "body" (JSON when it parses, else text, None when
     empty or a form), "form" ([name, value] pairs of a form body, else None), "status" (of the answer,
     None until it starts), "at" (time.monotonic() on arrival)}

plus what a fake adds of its own (its clock's reading, which token was sent).
"""

from __future__ import annotations

import fnmatch
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Scope

#: Headers that carry credentials in any of the faked APIs (and those a proxy or browser would add).
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "x-api-key",
    "x-skaha-registry-auth", "x-auth-token-skaha", "x-slurm-user-token", "x-rucio-auth-token",
    "x-rucio-password",
})  # fmt: skip
REDACTED = "<redacted>"
#: A text body is kept up to this many characters: enough for any assertion, bounded for a long test.
TEXT_LIMIT = 10_000
FORM = "application/x-www-form-urlencoded"


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers as sent (a repeated one: its last value), names in lower case."""
    return {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}


def redacted(headers: dict[str, str]) -> dict[str, str]:
    """The headers with each secret replaced, keeping its scheme (`Bearer <redacted>`), which tests check."""
    shown: dict[str, str] = {}
    for key, value in headers.items():
        if key in SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} {REDACTED}".strip()
        shown[key] = value
    return shown


def _body(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text[:TEXT_LIMIT]


class RequestLog:
    """The requests in the order they came. Iterating it reads a copy, so the server may go on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []

    def record(self, scope: Scope, body: bytes, **extra: Any) -> dict[str, Any]:
        """Note a request on its arrival; the caller fills in `status` when the answer starts."""
        headers = request_headers(scope)
        query = scope.get("query_string", b"").decode("latin-1")
        form = None
        if headers.get("content-type", "").startswith(FORM):
            form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        record: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": query,
            "params": parse_qsl(query, keep_blank_values=True),
            "headers": redacted(headers),
            "body": None if form is not None else _body(body),
            "form": form,
            "status": None,
            "at": time.monotonic(),
            **extra,
        }
        with self._lock:
            self._records.append(record)
        return record

    def select(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """The requests with this method (any when None) and a path that is or matches this glob."""
        with self._lock:
            records = list(self._records)
        return [
            r for r in records
            if (method is None or r["method"] == method)
            and (path is None or r["path"] == path or fnmatch.fnmatchcase(r["path"], path))
        ]  # fmt: skip

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.select())

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
