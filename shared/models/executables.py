"""Executables: what the session runs (kinds/executable/*.yaml)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Discriminator, Tag

from shared.models.base import KindNormaliser, StrictBool, StrictInt, WireModel, one_of
from shared.models.common import LifecycleComponent, kind_discriminator
from shared.models.kinds import DOCKER_CONTAINER_KIND, JUPYTER_NOTEBOOK_KIND, SINGULARITY_CONTAINER_KIND


class JupyterNotebook(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({JUPYTER_NOTEBOOK_KIND}))] = JUPYTER_NOTEBOOK_KIND
    #: URL of the notebook; a client may send a path relative to its request file, resolved client-side.
    location: str


class SingularityContainer(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SINGULARITY_CONTAINER_KIND}))] = (
        SINGULARITY_CONTAINER_KIND
    )
    location: str


class DockerPlatformSpec(WireModel):
    architecture: str | None = None
    os: str | None = None


class DockerImageSpec(WireModel):
    locations: list[str]
    digest: str | None = None
    platform: DockerPlatformSpec | None = None


class DockerInternalPort(WireModel):
    port: StrictInt | None = None


class DockerExternalPort(WireModel):
    port: StrictInt | None = None
    addresses: list[str] | None = None


class DockerNetworkPort(WireModel):
    access: StrictBool | None = None
    internal: DockerInternalPort | None = None
    external: DockerExternalPort | None = None
    # Free text in the schema ("typically one of UDP, TCP, HTTP, HTTPS"); platforms judge it.
    protocol: str | None = None
    path: str | None = None


class DockerNetworkSpec(WireModel):
    ports: list[DockerNetworkPort] | None = None


class DockerContainer(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({DOCKER_CONTAINER_KIND}))] = DOCKER_CONTAINER_KIND
    image: DockerImageSpec
    privileged: StrictBool | None = None
    command: list[str] | None = None
    entrypoint: str | None = None
    environment: dict[str, str] | None = None
    network: DockerNetworkSpec | None = None


Executable = Annotated[
    Annotated[JupyterNotebook, Tag(JUPYTER_NOTEBOOK_KIND)]
    | Annotated[DockerContainer, Tag(DOCKER_CONTAINER_KIND)]
    | Annotated[SingularityContainer, Tag(SINGULARITY_CONTAINER_KIND)],
    Discriminator(kind_discriminator),
]
