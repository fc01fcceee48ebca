"""The `kind` discriminator URIs of the Calycopis schema 1.0.7, and their historical aliases.

Clients written against older schema generations still send the `.../EB/schema/.../types/...-1.0`
forms, and the Java reference server emits `kinds/computer/` for compute; accepting those here
(and only here) keeps every other module comparing against one canonical URI.
"""

from __future__ import annotations

import re
from typing import Final

KIND_BASE: Final = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"

JUPYTER_NOTEBOOK_KIND: Final = KIND_BASE + "executable/jupyter-notebook.yaml"
DOCKER_CONTAINER_KIND: Final = KIND_BASE + "executable/docker-container.yaml"
SINGULARITY_CONTAINER_KIND: Final = KIND_BASE + "executable/singularity-container.yaml"

#: Our own extension (see `LocalCommand`), not part of schema 1.0.7: deliberately a URN outside the
#: Calycopis URI space, so that it can never collide with a future Calycopis kind.
LOCAL_COMMAND_KIND: Final = "urn:execution-broker:kinds/executable/local-command"

SIMPLE_COMPUTE_KIND: Final = KIND_BASE + "compute/simple-compute-resource.yaml"
SIMPLE_STORAGE_KIND: Final = KIND_BASE + "storage/simple-storage-resource.yaml"
SIMPLE_VOLUME_KIND: Final = KIND_BASE + "volume/simple-volume-mount.yaml"

SIMPLE_DATA_KIND: Final = KIND_BASE + "data/simple-data-resource.yaml"
S3_DATA_KIND: Final = KIND_BASE + "data/S3-data-resource.yaml"
RUCIO_DATA_KIND: Final = KIND_BASE + "data/rucio-data-resource.yaml"
IVOA_DATA_KIND: Final = KIND_BASE + "data/ivoa-data-resource.yaml"
SKAO_DATA_KIND: Final = KIND_BASE + "data/skao-data-resource.yaml"

SIMPLE_SESSION_KIND: Final = KIND_BASE + "session/simple-execution-session.yaml"
SCHEDULED_SESSION_KIND: Final = KIND_BASE + "session/scheduled-execution-session.yaml"
OFFERSET_KIND: Final = KIND_BASE + "offerset/execution-offerset.yaml"

ABSTRACT_COST_KIND: Final = KIND_BASE + "costs/abstract-cost-item.yaml"
SIMPLE_MINMAX_FLOAT_COST_KIND: Final = KIND_BASE + "costs/simple-minmax-float-cost.yaml"
ABSTRACT_METRIC_KIND: Final = KIND_BASE + "metrics/abstract-metric-item.yaml"
SIMPLE_MINMAX_FLOAT_METRIC_KIND: Final = KIND_BASE + "metrics/simple-minmax-float-metric.yaml"

STRING_VALUE_OPTION_KIND: Final = "uri:string-value-option"
ENUM_VALUE_OPTION_KIND: Final = "uri:enum-value-option"
INTEGER_VALUE_OPTION_KIND: Final = "uri:integer-value-option"
INTEGER_DELTA_OPTION_KIND: Final = "uri:integer-delta-option"

STRING_VALUE_UPDATE_KIND: Final = "uri:string-value-update"
ENUM_VALUE_UPDATE_KIND: Final = "uri:enum-value-update"
INTEGER_VALUE_UPDATE_KIND: Final = "uri:integer-value-update"
INTEGER_DELTA_UPDATE_KIND: Final = "uri:integer-delta-update"

EXECUTABLE_KINDS: Final = frozenset(
    {JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND, SINGULARITY_CONTAINER_KIND, LOCAL_COMMAND_KIND}
)
COMPUTE_KINDS: Final = frozenset({SIMPLE_COMPUTE_KIND})
STORAGE_KINDS: Final = frozenset({SIMPLE_STORAGE_KIND})
VOLUME_KINDS: Final = frozenset({SIMPLE_VOLUME_KIND})
DATA_KINDS: Final = frozenset(
    {SIMPLE_DATA_KIND, S3_DATA_KIND, RUCIO_DATA_KIND, IVOA_DATA_KIND, SKAO_DATA_KIND}
)
SESSION_KINDS: Final = frozenset({SIMPLE_SESSION_KIND, SCHEDULED_SESSION_KIND})
COST_KINDS: Final = frozenset({ABSTRACT_COST_KIND, SIMPLE_MINMAX_FLOAT_COST_KIND})
METRIC_KINDS: Final = frozenset({ABSTRACT_METRIC_KIND, SIMPLE_MINMAX_FLOAT_METRIC_KIND})

#: Every URI-style kind this package models, in its current form (extensions included).
KNOWN_KINDS: Final = (
    EXECUTABLE_KINDS
    | COMPUTE_KINDS
    | STORAGE_KINDS
    | VOLUME_KINDS
    | DATA_KINDS
    | SESSION_KINDS
    | COST_KINDS
    | METRIC_KINDS
    | {OFFERSET_KIND}
)

# Lower-cased "family/name" -> current URI. Lower-casing lets an old "s3-data-resource-1.0" find the
# current "S3-data-resource.yaml" without us having to guess how each generation capitalised it.
_BY_FAMILY_NAME: Final = {
    kind.removeprefix(KIND_BASE).removesuffix(".yaml").lower(): kind
    for kind in KNOWN_KINDS
    if kind.startswith(KIND_BASE)  # extensions have no aliases
}

# Families were renamed between schema generations; map the old spellings onto the current ones.
_FAMILY_ALIASES: Final = {
    "executables": "executable",
    "computer": "compute",
    "resources/compute": "compute",
    "resources/storage": "storage",
    "resources/data": "data",
    "resources/volume": "volume",
    "resources/volumes": "volume",
    "volumes": "volume",
    "sessions": "session",
    "offersets": "offerset",
    "cost": "costs",
    "metric": "metrics",
}

_PREFIX = r"^https?://(?:www\.)?purl\.org/ivoa\.net/"
_OLD_FORM = re.compile(_PREFIX + r"EB/schema/(?:v1\.0/)?types/(?P<path>.+?)-1\.0$")
_CURRENT_FORM = re.compile(_PREFIX + r"Calycopis-openapi/schema/v1\.0/kinds/(?P<path>.+?)\.yaml$")


def _lookup(path: str) -> str | None:
    family, sep, name = path.rpartition("/")
    if not sep:
        return None
    family = _FAMILY_ALIASES.get(family, family)
    return _BY_FAMILY_NAME.get(f"{family}/{name}".lower())


def normalise_kind(kind: str) -> str:
    """Return the current kind URI for `kind`, or `kind` itself when it is not a known alias.

    Unknown strings come back unchanged so that error messages can quote what the client sent.
    """
    if kind in KNOWN_KINDS:
        return kind
    for pattern in (_OLD_FORM, _CURRENT_FORM):
        match = pattern.match(kind)
        if match:
            found = _lookup(match.group("path"))
            if found is not None:
                return found
    return kind
