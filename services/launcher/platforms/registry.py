"""Finds platform plugins by name through the `execution_broker.platforms` entry-point group.

Plugins are installed distributions (this one ships `local`); the launcher never imports a plugin
module by path, so a site adds a platform by installing a package, not by editing the launcher.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from services.launcher.platforms.base import Platform

ENTRY_POINT_GROUP = "execution_broker.platforms"


class UnknownPlatform(LookupError):
    def __init__(self, name: str, installed: list[str]) -> None:
        listed = ", ".join(installed) if installed else "none"
        super().__init__(f"no platform plugin named {name!r} is installed (installed: {listed})")
        self.name = name
        self.installed = installed


def installed_platforms() -> list[str]:
    return sorted({point.name for point in entry_points(group=ENTRY_POINT_GROUP)})


def load_platform(name: str, **settings: Any) -> Platform:
    """Instantiate the plugin registered as `name`, passing the settings by keyword."""
    points = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not points:
        raise UnknownPlatform(name, installed_platforms())
    # Two distributions claiming one name is a packaging error; the first one found wins.
    factory = next(iter(points)).load()
    platform = factory(**settings)
    if not isinstance(platform, Platform):
        raise TypeError(f"the plugin {name!r} ({factory!r}) does not implement the Platform protocol")
    return platform
