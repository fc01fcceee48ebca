"""Executables: what the session runs (kinds/executable/*.yaml, plus our `LocalCommand` extension)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Discriminator, Field, StrictStr, Tag
from pydantic_core import PydanticCustomError

from shared.models.base import KindNormaliser, StrictBool, WireModel, one_of
from shared.models.common import LifecycleComponent, kind_discriminator
from shared.models.kinds import (
    DOCKER_CONTAINER_KIND,
    JUPYTER_NOTEBOOK_KIND,
    LOCAL_COMMAND_KIND,
    SINGULARITY_CONTAINER_KIND,
)
from shared.models.limits import MAX_ARGUMENTS, MAX_ITEMS, ContainerPort, PortNumber, at_most


class NotebookMode(StrEnum):
    """How a platform runs a notebook: opened for the user, or executed to the end unattended."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


class JupyterNotebook(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({JUPYTER_NOTEBOOK_KIND}))] = JUPYTER_NOTEBOOK_KIND
    #: URL of the notebook; a client may send a path relative to its request file, resolved client-side.
    location: str
    #: Our extension, not in schema 1.0.7 (whose JupyterNotebook allows extra fields, so documents that
    #: carry it still validate): `interactive` opens the notebook in a JupyterLab session (its URL is
    #: the session's connector), `batch` executes it unattended and keeps the executed notebook.
    #: Absent means `interactive` where a platform can open notebooks (canfar); the local platform
    #: only executes them, so it runs an absent mode as `batch` and refuses `interactive`.
    notebook_mode: NotebookMode | None = None


class SingularityContainer(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SINGULARITY_CONTAINER_KIND}))] = (
        SINGULARITY_CONTAINER_KIND
    )
    location: str


class DockerPlatformSpec(WireModel):
    architecture: str | None = None
    os: str | None = None


class DockerImageSpec(WireModel):
    locations: Annotated[list[str], at_most(MAX_ITEMS)]
    digest: str | None = None
    platform: DockerPlatformSpec | None = None


class DockerInternalPort(WireModel):
    port: ContainerPort | None = None


class DockerExternalPort(WireModel):
    port: PortNumber | None = None
    addresses: Annotated[list[str] | None, at_most(MAX_ITEMS)] = None


class DockerNetworkPort(WireModel):
    access: StrictBool | None = None
    internal: DockerInternalPort | None = None
    external: DockerExternalPort | None = None
    # Free text in the schema ("typically one of [UDP, TCP, HTTP, HTTPS]"): a plain string here, so
    # stored sessions always read back; a request naming another is refused when it is parsed
    # (`shared.models.runnable.PORT_PROTOCOLS`).
    protocol: str | None = None
    path: str | None = None


class DockerNetworkSpec(WireModel):
    ports: Annotated[list[DockerNetworkPort] | None, at_most(MAX_ITEMS)] = None


class DockerContainer(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({DOCKER_CONTAINER_KIND}))] = DOCKER_CONTAINER_KIND
    image: DockerImageSpec
    privileged: StrictBool | None = None
    command: Annotated[list[str] | None, at_most(MAX_ARGUMENTS)] = None
    entrypoint: str | None = None
    environment: Annotated[dict[str, str] | None, at_most(MAX_ARGUMENTS)] = None
    network: DockerNetworkSpec | None = None


def _runnable_argv(argv: list[str]) -> list[str]:
    if not argv[0]:
        raise PydanticCustomError("empty_program", "the program (first element) must not be empty")
    if any("\0" in part for part in argv):
        raise PydanticCustomError("nul_in_argument", "arguments must not contain NUL characters")
    return argv


def _valid_environment(environment: dict[str, str] | None) -> dict[str, str] | None:
    for name, value in (environment or {}).items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise PydanticCustomError(
                "bad_environment_variable",
                "[{name}] is not a valid environment variable (a name must be non-empty, without '='"
                " or NUL; a value without NUL)",
                {"name": name},
            )
    return environment


class LocalCommand(LifecycleComponent):
    """A plain command run on the broker's own machine: our extension, not part of schema 1.0.7.

    `command` is an argv list, executed directly (never through a shell), in the session's work
    directory, with `environment` added to the broker's environment. Trust: this runs arbitrary user
    code with the broker's privileges, exactly like a `JupyterNotebook` on the `local` platform does;
    only offer the `local` platform to users you would give a shell on that machine.
    """

    kind: Annotated[str, KindNormaliser, one_of(frozenset({LOCAL_COMMAND_KIND}))] = LOCAL_COMMAND_KIND
    #: The program and its arguments, e.g. `["echo", "hello"]`; the program is looked up in PATH.
    command: Annotated[
        list[StrictStr], at_most(MAX_ARGUMENTS), Field(min_length=1), AfterValidator(_runnable_argv)
    ]
    environment: Annotated[
        dict[StrictStr, StrictStr] | None, at_most(MAX_ARGUMENTS), AfterValidator(_valid_environment)
    ] = None


Executable = Annotated[
    Annotated[JupyterNotebook, Tag(JUPYTER_NOTEBOOK_KIND)]
    | Annotated[DockerContainer, Tag(DOCKER_CONTAINER_KIND)]
    | Annotated[SingularityContainer, Tag(SINGULARITY_CONTAINER_KIND)]
    | Annotated[LocalCommand, Tag(LOCAL_COMMAND_KIND)],
    Discriminator(kind_discriminator),
]
