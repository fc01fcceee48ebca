"""Injected faults: one model for every fake server (launcher-targets.md §5).

A fault is posted to `/_fake/faults` (or given to `FakeServer.add_fault`) as

    {"match": {"method", "path" (fnmatch glob), "query": {name: value}},
     "status", "headers", "body", "times" (default 1, null = for ever), "delay_s"}

and applies, before authentication, to the API requests it matches:

* with a `status`: wait `delay_s`, then answer that status with `headers` (a `Retry-After`, say) and
  `body` — a string as it is, any other JSON value as JSON, none at all: the fake's own error body;
* without a `status`: do the work, then hold the answer back `delay_s`. This is a slow server that
  acted although its client timed out: a POST still creates what it creates.

Each match uses one of `times`, and a used-up fault is dropped: `"times": 2` fails twice, then lets
requests through.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

#: A longer hang is a mistake in a test: it would outlive the server's shutdown by far.
MAX_DELAY_S = 600.0


@dataclass
class Fault:
    method: str | None  # None or "*": any method
    path: str  # an fnmatch glob
    query: dict[str, str]  # query parameters the request must carry, with these values
    status: int | None
    headers: dict[str, str]
    body: Any  # None: the fake's default error body for `status`
    times: int | None  # None: for ever
    delay_s: float

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Fault:
        """The fault a test posted; ValueError with what is wrong in it."""
        if not isinstance(spec, Mapping):
            raise ValueError("a fault is a JSON object")
        match = spec.get("match") or {}
        if not isinstance(match, Mapping):
            raise ValueError("match is an object with method, path and query")
        status = spec.get("status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError(f"status must be an HTTP status from 100 to 599, not {status!r}")
        times = spec.get("times", 1)
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError(f"times must be a positive whole number or null (for ever), not {times!r}")
        try:
            delay_s = float(spec.get("delay_s") or 0.0)
        except (TypeError, ValueError):
            raise ValueError(f"delay_s must be a number of seconds, not {spec.get('delay_s')!r}") from None
        if not 0.0 <= delay_s <= MAX_DELAY_S:
            raise ValueError(f"delay_s must be from 0 to {MAX_DELAY_S:g} s, not {delay_s:g}")
        return cls(
            method=match.get("method"),
            path=str(match.get("path", "*")),
            query={str(k): str(v) for k, v in (match.get("query") or {}).items()},
            status=status,
            headers={str(k): str(v) for k, v in (spec.get("headers") or {}).items()},
            body=spec.get("body"),
            times=times,
            delay_s=delay_s,
        )

    def matches(self, method: str, path: str, query: Mapping[str, str]) -> bool:
        if self.method not in (None, "*") and self.method.upper() != method.upper():
            return False
        if path != self.path and not fnmatch.fnmatchcase(path, self.path):
            return False
        return all(query.get(key) == value for key, value in self.query.items())


class Faults:
    """The faults waiting for requests, first added first matched.

    Tests add and clear them from their own thread while the server's thread takes them: a lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, spec: Mapping[str, Any]) -> int:
        fault = Fault.from_spec(spec)
        with self._lock:
            self._faults.append(fault)
            return len(self._faults)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, query: Mapping[str, str]) -> Fault | None:
        """The first fault that matches, with one of its `times` used up."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path, query):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def specs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(fault) for fault in self._faults]

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)
