"""Finds platform plugins by name through the `execution_broker.platforms` entry-point group.

Plugins are installed distributions (this one ships `local`, `canfar`, `dirac` and `jbo`); nothing
imports a plugin module by path, so a site adds a platform by installing a package, not by editing
the broker. What a plugin can run is read from its class (`capabilities`) without building an
instance: the offers service needs no platform settings, secrets or connections to learn it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from shared.models import normalise_kind
from shared.platforms.port import Platform

ENTRY_POINT_GROUP = "execution_broker.platforms"


class UnknownPlatform(LookupError):
    def __init__(self, name: str, installed: list[str], *, needed_by: str | None = None) -> None:
        listed = ", ".join(installed) if installed else "none"
        wanted = f", needed by {needed_by}" if needed_by else ""
        super().__init__(f"no platform plugin named {name!r} is installed{wanted} (installed: {listed})")
        self.name = name
        self.installed = installed


class InvalidPlugin(TypeError):
    """A plugin whose class does not declare, or does not implement, what the port asks for."""


@dataclass(frozen=True)
class Capabilities:
    """What a platform declares it can run: kind URIs in their current form."""

    executable_kinds: frozenset[str]
    data_kinds: frozenset[str]
    # Whether the platform runs user code on the broker's own host: its pools then run it only for
    # the owners they allow (`Pool.allowed_owners`).
    runs_on_host: bool = False


def installed_platforms() -> list[str]:
    return sorted({point.name for point in entry_points(group=ENTRY_POINT_GROUP)})


def _entry_point(name: str) -> EntryPoint:
    points = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not points:
        raise UnknownPlatform(name, installed_platforms())
    # Two distributions claiming one name is a packaging error; the first one found wins.
    return next(iter(points))


def load_platform(name: str, **settings: Any) -> Platform:
    """Instantiate the plugin registered as `name`, passing the settings by keyword."""
    point = _entry_point(name)
    factory = point.load()
    platform = factory(**settings)
    if not isinstance(platform, Platform):
        members = {m for m in Platform.__annotations__ if not m.startswith("_")} | {
            m for m, value in vars(Platform).items() if callable(value) and not m.startswith("_")
        }
        missing = ", ".join(sorted(members - set(dir(platform))))
        raise InvalidPlugin(
            f"the platform plugin {name!r} ({point.value}) does not implement the Platform protocol "
            f"(missing: {missing or 'nothing by name; check the signatures'})"
        )
    return platform


def capabilities(name: str) -> Capabilities:
    """What the plugin registered as `name` can run, from its class attributes (not instantiated)."""
    point = _entry_point(name)
    return declared_capabilities(point.load(), f"{name!r} ({point.value})")


def installed_capabilities() -> dict[str, Capabilities]:
    return {name: capabilities(name) for name in installed_platforms()}


def declared_capabilities(plugin: Any, label: str | None = None) -> Capabilities:
    """Check and read the kinds a plugin class declares; InvalidPlugin names what is wrong.

    A plugin must say which executable kinds it runs (at least one: a platform that runs nothing
    could never be offered) and which data kinds it stages (possibly none).
    """
    where = label or repr(plugin)
    return Capabilities(
        executable_kinds=_kinds(plugin, "executable_kinds", where, may_be_empty=False),
        data_kinds=_kinds(plugin, "data_kinds", where, may_be_empty=True),
        runs_on_host=_runs_on_host(plugin, where),
    )


def _runs_on_host(plugin: Any, where: str) -> bool:
    try:
        declared = inspect.getattr_static(plugin, "runs_on_host")
    except AttributeError:
        return False
    if not isinstance(declared, bool):
        raise InvalidPlugin(f"the platform plugin {where} declares runs_on_host as {declared!r}, not a bool")
    return declared


def _kinds(plugin: Any, attribute: str, where: str, *, may_be_empty: bool) -> frozenset[str]:
    declare = f"declare `{attribute}: ClassVar[frozenset[str]]` on the plugin class"
    if not isinstance(plugin, type):
        raise InvalidPlugin(f"the platform plugin {where} is not a class, so it declares no {attribute}")
    try:
        # Static: a class attribute is read as declared, and nothing of the plugin runs.
        declared = inspect.getattr_static(plugin, attribute)
    except AttributeError:
        raise InvalidPlugin(f"the platform plugin {where} declares no {attribute}: {declare}") from None
    if not isinstance(declared, (frozenset, set)) or not all(isinstance(k, str) and k for k in declared):
        raise InvalidPlugin(
            f"the platform plugin {where} declares {attribute} as {declared!r}; {declare} "
            "(non-empty kind URIs)"
        )
    if not declared and not may_be_empty:
        raise InvalidPlugin(f"the platform plugin {where} declares no {attribute}: it could run nothing")
    return frozenset(normalise_kind(kind) for kind in declared)
