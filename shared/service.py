"""What each service offers the tools, found through the ``execution_broker.services`` entry points.

The library never imports a service: the CLI runs one, and the AsyncAPI document describes them all,
through the `ServiceEntry` each service's ``main`` module names in pyproject.toml.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from shared.bus.wiring import Wiring
from shared.settings import Settings

ENTRY_POINT_GROUP = "execution_broker.services"


@dataclass(frozen=True)
class ServiceEntry:
    """A service: ``run`` it until ``stop`` is set, or read its ``wiring`` without running it.

    ``wiring`` builds the service as ``run`` would, but connects to nothing, opens no file and starts
    no thread, so tools can call it anywhere.
    """

    name: str
    run: Callable[[Settings, asyncio.Event], Awaitable[None]]
    wiring: Callable[[Settings], Wiring]


class UnknownService(LookupError):
    def __init__(self, name: str, installed: list[str]) -> None:
        listed = ", ".join(installed) if installed else "none"
        super().__init__(f"no service named {name!r} is installed (installed: {listed})")


def installed_services() -> dict[str, ServiceEntry]:
    """Every installed service by name, in name order."""
    return {name: _load(name, point.load()) for name, point in _points().items()}


def load_service(name: str) -> ServiceEntry:
    point = _points().get(name)
    if point is None:
        raise UnknownService(name, list(_points()))
    return _load(name, point.load())


def _points() -> dict[str, EntryPoint]:
    points: dict[str, EntryPoint] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        points.setdefault(point.name, point)  # two distributions naming one service: the first wins
    return dict(sorted(points.items()))


def _load(name: str, loaded: object) -> ServiceEntry:
    if not isinstance(loaded, ServiceEntry):
        raise TypeError(f"the entry point of service {name!r} names {loaded!r}, not a ServiceEntry")
    if loaded.name != name:
        raise TypeError(f"the entry point {name!r} names the service {loaded.name!r}")
    return loaded
