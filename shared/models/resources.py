"""Compute, storage, volume and data resources (kinds/{compute,storage,volume,data}/*.yaml)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Discriminator, Tag

from shared.models.base import KindNormaliser, StrictInt, WireModel, one_of
from shared.models.common import Component, LifecycleComponent, MinMax, kind_discriminator
from shared.models.kinds import (
    IVOA_DATA_KIND,
    RUCIO_DATA_KIND,
    S3_DATA_KIND,
    SIMPLE_COMPUTE_KIND,
    SIMPLE_DATA_KIND,
    SIMPLE_STORAGE_KIND,
    SIMPLE_VOLUME_KIND,
    SKAO_DATA_KIND,
)
from shared.models.limits import (
    MAX_COMPONENTS,
    MAX_CORES,
    MAX_GIB,
    MAX_ITEMS,
    ByteCount,
    at_most,
    pair_between,
)

# -- volumes --------------------------------------------------------------------------------------


class SimpleVolumeMount(Component):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SIMPLE_VOLUME_KIND}))] = SIMPLE_VOLUME_KIND
    path: str | None = None
    mode: Literal["READONLY", "READWRITE"] | None = None
    #: Name (or UUID) of a data or storage resource in the same request.
    resource: str | None = None


VolumeMount = Annotated[
    Annotated[SimpleVolumeMount, Tag(SIMPLE_VOLUME_KIND)],
    Discriminator(kind_discriminator),
]


# -- compute --------------------------------------------------------------------------------------


class SimpleComputeResource(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SIMPLE_COMPUTE_KIND}))] = SIMPLE_COMPUTE_KIND
    volumes: Annotated[list[VolumeMount] | None, at_most(MAX_COMPONENTS)] = None
    #: Number of cores: `min` is what the job needs, `max` what it can use.
    cores: Annotated[MinMax | None, pair_between(1, MAX_CORES)] = None
    #: Memory in GiB.
    memory: Annotated[MinMax | None, pair_between(1, MAX_GIB)] = None


ComputeResource = Annotated[
    Annotated[SimpleComputeResource, Tag(SIMPLE_COMPUTE_KIND)],
    Discriminator(kind_discriminator),
]


# -- storage --------------------------------------------------------------------------------------


class SimpleStorageResource(LifecycleComponent):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SIMPLE_STORAGE_KIND}))] = SIMPLE_STORAGE_KIND
    #: Names or UUIDs of the data resources held in this storage.
    data: Annotated[list[str] | None, at_most(MAX_COMPONENTS)] = None
    #: Size in GiB.
    size: Annotated[MinMax | None, pair_between(0, MAX_GIB)] = None


StorageResource = Annotated[
    Annotated[SimpleStorageResource, Tag(SIMPLE_STORAGE_KIND)],
    Discriminator(kind_discriminator),
]


# -- data -----------------------------------------------------------------------------------------


class DataResourceBase(LifecycleComponent):
    #: Name or UUID of the storage resource that holds this data.
    storage: str | None = None


class SimpleDataResource(DataResourceBase):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SIMPLE_DATA_KIND}))] = SIMPLE_DATA_KIND
    location: str | None = None


class S3DataResource(DataResourceBase):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({S3_DATA_KIND}))] = S3_DATA_KIND
    endpoint: str | None = None
    template: str | None = None
    bucket: str | None = None
    object: str | None = None


DataObjectType = Literal["FILE", "CONTAINER", "DATASET"]


class RucioDataResourceBlock(WireModel):
    endpoint: str | None = None
    scope: str | None = None
    object: str | None = None
    type: DataObjectType | None = None


class RucioReplicaBlock(WireModel):
    rse: str | None = None
    url: str | None = None


class RucioDataResource(DataResourceBase):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({RUCIO_DATA_KIND}))] = RUCIO_DATA_KIND
    rucio: RucioDataResourceBlock | None = None


class IvoaObsCoreItem(WireModel):
    obs_id: str | None = None
    obs_collection: str | None = None
    obs_publisher_did: str | None = None
    obs_creator_did: str | None = None
    dataproduct_type: str | None = None
    calib_level: StrictInt | None = None
    access_url: str | None = None
    access_format: str | None = None


class IvoaDataLinkItem(WireModel):
    ID: str | None = None
    access_url: str | None = None
    service_def: str | None = None
    error_message: str | None = None
    description: str | None = None
    semantics: str | None = None
    content_type: str | None = None
    content_length: ByteCount | None = None
    content_qualifier: str | None = None
    local_semantics: str | None = None
    link_auth: str | None = None
    link_authorized: str | None = None


class IvoaDataResourceBlock(WireModel):
    ivoid: str | None = None
    obscore: IvoaObsCoreItem | None = None
    datalink: IvoaDataLinkItem | None = None


class IvoaDataResource(DataResourceBase):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({IVOA_DATA_KIND}))] = IVOA_DATA_KIND
    ivoa: IvoaDataResourceBlock | None = None


class SkaoChecksumItem(WireModel):
    type: str | None = None
    value: str | None = None


class SkaoReplicaItem(WireModel):
    rsename: str | None = None
    dataurl: str | None = None


def _replica_from_name(value: object) -> object:
    # The June 2025 examples list replicas as bare RSE names; the schema wants objects.
    return {"rsename": value} if isinstance(value, str) else value


class SkaoDataResourceBlock(WireModel):
    namespace: str | None = None
    objectname: str | None = None
    objecttype: DataObjectType | None = None
    #: Size of the object in bytes.
    datasize: ByteCount | None = None
    checksum: SkaoChecksumItem | None = None
    replicas: Annotated[
        list[Annotated[SkaoReplicaItem, BeforeValidator(_replica_from_name)]] | None, at_most(MAX_ITEMS)
    ] = None


class SkaoDataResource(DataResourceBase):
    kind: Annotated[str, KindNormaliser, one_of(frozenset({SKAO_DATA_KIND}))] = SKAO_DATA_KIND
    ivoa: IvoaDataResourceBlock | None = None
    skao: SkaoDataResourceBlock | None = None


DataResource = Annotated[
    Annotated[SimpleDataResource, Tag(SIMPLE_DATA_KIND)]
    | Annotated[S3DataResource, Tag(S3_DATA_KIND)]
    | Annotated[RucioDataResource, Tag(RUCIO_DATA_KIND)]
    | Annotated[IvoaDataResource, Tag(IVOA_DATA_KIND)]
    | Annotated[SkaoDataResource, Tag(SKAO_DATA_KIND)],
    Discriminator(kind_discriminator),
]
