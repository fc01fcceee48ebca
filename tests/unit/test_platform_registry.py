"""The platform registry: what the installed plugins declare they run, read without building them,
and the errors a site sees for a missing plugin or a plugin that declares nothing usable."""

from __future__ import annotations

import subprocess
import sys
from typing import Any, ClassVar

import pytest

from services.offers.platforms import pool_choices
from shared.models import (
    DOCKER_CONTAINER_KIND,
    IVOA_DATA_KIND,
    JUPYTER_NOTEBOOK_KIND,
    LOCAL_COMMAND_KIND,
    RUCIO_DATA_KIND,
    S3_DATA_KIND,
    SIMPLE_DATA_KIND,
    SINGULARITY_CONTAINER_KIND,
    SKAO_DATA_KIND,
)
from shared.platforms.registry import (
    Capabilities,
    InvalidPlugin,
    UnknownPlatform,
    capabilities,
    declared_capabilities,
    installed_capabilities,
)
from shared.pools import Pool


def test_the_plugins_of_this_distribution_declare_what_they_run() -> None:
    installed = installed_capabilities()
    assert installed["local"] == Capabilities(
        frozenset({JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND, LOCAL_COMMAND_KIND}),
        frozenset({SIMPLE_DATA_KIND}),
        runs_on_host=True,
    )
    assert installed["canfar"] == Capabilities(
        frozenset({JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND}), frozenset({SIMPLE_DATA_KIND})
    )
    assert installed["dirac"] == Capabilities(
        frozenset({DOCKER_CONTAINER_KIND, SINGULARITY_CONTAINER_KIND, LOCAL_COMMAND_KIND}), frozenset()
    )
    assert installed["jbo"] == Capabilities(
        frozenset({DOCKER_CONTAINER_KIND}),
        frozenset({SIMPLE_DATA_KIND, SKAO_DATA_KIND, IVOA_DATA_KIND, RUCIO_DATA_KIND, S3_DATA_KIND}),
    )


def test_an_unknown_platform_names_the_installed_ones() -> None:
    with pytest.raises(UnknownPlatform, match=r"'nope'.*installed: canfar, dirac, jbo, local"):
        capabilities("nope")


class Refuses:
    """Declares its kinds but cannot be built: reading the declaration must not try."""

    executable_kinds: ClassVar[frozenset[str]] = frozenset({DOCKER_CONTAINER_KIND})
    data_kinds: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        raise AssertionError("the plugin was instantiated")


class Inherits(Refuses):
    pass


def test_the_declaration_is_read_from_the_class_without_building_it() -> None:
    expected = Capabilities(frozenset({DOCKER_CONTAINER_KIND}), frozenset())
    assert declared_capabilities(Refuses) == expected
    assert declared_capabilities(Inherits) == expected


class OldKinds:
    executable_kinds: ClassVar[frozenset[str]] = frozenset(
        {"https://www.purl.org/ivoa.net/EB/schema/types/executable/docker-container-1.0"}
    )
    data_kinds: ClassVar[frozenset[str]] = frozenset(
        {"http://purl.org/ivoa.net/EB/schema/v1.0/types/data/simple-data-resource-1.0"}
    )


def test_declared_kinds_are_read_in_their_current_form() -> None:
    assert declared_capabilities(OldKinds) == Capabilities(
        frozenset({DOCKER_CONTAINER_KIND}), frozenset({SIMPLE_DATA_KIND})
    )


class Silent:
    pass


class NoData:
    executable_kinds: ClassVar[frozenset[str]] = frozenset({DOCKER_CONTAINER_KIND})


class RunsNothing:
    executable_kinds: ClassVar[frozenset[str]] = frozenset()
    data_kinds: ClassVar[frozenset[str]] = frozenset()


class AString:
    executable_kinds: ClassVar[Any] = DOCKER_CONTAINER_KIND
    data_kinds: ClassVar[frozenset[str]] = frozenset()


class NotStrings:
    executable_kinds: ClassVar[Any] = frozenset({1})
    data_kinds: ClassVar[frozenset[str]] = frozenset()


def factory() -> object:
    return Silent()


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (Silent, r"declares no executable_kinds: declare `executable_kinds: ClassVar\[frozenset\[str\]\]`"),
        (NoData, r"declares no data_kinds: declare `data_kinds"),
        (RunsNothing, r"declares no executable_kinds: it could run nothing"),
        (AString, r"declares executable_kinds as '.*docker-container.yaml'; declare"),
        (NotStrings, r"declares executable_kinds as frozenset\(\{1\}\)"),
        (factory, r"is not a class, so it declares no executable_kinds"),
    ],
)
def test_a_plugin_that_declares_nothing_usable_is_refused_with_the_reason(
    plugin: object, expected: str
) -> None:
    with pytest.raises(InvalidPlugin, match=expected):
        declared_capabilities(plugin, "'toy' (toy.plugin:Toy)")


def pool(name: str, platform: str) -> Pool:
    return Pool(name=name, platform=platform, cores=1, memory_gib=1)


def test_offers_gives_each_pool_what_its_plugin_declares() -> None:
    choices = pool_choices([pool("here", "local"), pool("batch", "dirac")])
    assert [(c.name, c.platform) for c in choices] == [("here", "local"), ("batch", "dirac")]
    assert choices[0].data_kinds == frozenset({SIMPLE_DATA_KIND})
    assert SINGULARITY_CONTAINER_KIND in choices[1].executable_kinds


def test_offers_refuses_to_start_with_a_pool_whose_plugin_is_not_installed() -> None:
    with pytest.raises(
        UnknownPlatform, match=r"'toy' is installed, needed by the pool 'toybox' \(EB_POOLS\)"
    ):
        pool_choices([pool("here", "local"), pool("toybox", "toy")])


def test_the_services_do_not_import_pytest() -> None:
    """The contract suite is the one module that needs pytest; nothing a service runs imports it."""
    modules = [
        "services.offers.main",
        "services.launcher.main",
        "services.scheduler.main",
        "shared.platforms.registry",
        "services.launcher.platforms.local.platform",
        "services.launcher.platforms.canfar.platform",
        "services.launcher.platforms.dirac.platform",
        "services.launcher.platforms.jbo.platform",
    ]
    code = (
        f"import sys\nfor m in {modules!r}: __import__(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest', 'pytest_asyncio')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
