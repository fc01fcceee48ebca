"""Our serialised documents must validate against the published Calycopis 1.0.7 schema files."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.iso8601 import format_duration, format_instant, format_interval_instant
from shared.models import (
    DOCKER_CONTAINER_KIND,
    KIND_BASE,
    ComponentMetadata,
    DockerContainer,
    DockerImageSpec,
    DockerInternalPort,
    DockerNetworkPort,
    DockerNetworkSpec,
    DockerPlatformSpec,
    EnumValueOption,
    EnumValueUpdate,
    IvoaDataResourceBlock,
    JupyterNotebook,
    LifecycleSchedule,
    MessageItem,
    MinMax,
    OfferSetResponse,
    ScheduledExecutionSession,
    SimpleComputeResource,
    SimpleDataResource,
    SimpleMinMaxFloatCost,
    SimpleMinMaxFloatMetric,
    SimpleSessionConnector,
    SimpleStorageResource,
    SimpleVolumeMount,
    SkaoDataResource,
    SkaoDataResourceBlock,
    SkaoReplicaItem,
    StartDurationInstant,
    StartDurationInterval,
    parse_execution_request,
    to_jsonable,
)
from tests.schema_validation import requires_schemas, validate_against

pytestmark = requires_schemas

NOW = datetime(2025, 11, 25, 5, 22, 10, tzinfo=UTC)
REQUESTS = Path(__file__).resolve().parents[1] / "data" / "requests"
EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"


def schedule(start: datetime, prepare: timedelta, run: timedelta) -> LifecycleSchedule:
    return LifecycleSchedule(
        preparing=StartDurationInstant(
            start=format_instant(start - prepare), duration=format_duration(prepare)
        ),
        available=StartDurationInterval(start=format_interval_instant(start), duration=format_duration(run)),
        releasing=StartDurationInstant(start=format_instant(start + run), duration="PT10S"),
    )


def meta(name: str, number: int) -> ComponentMetadata:
    uuid = f"00000000-0000-4000-8000-{number:012d}"
    return ComponentMetadata(
        uuid=uuid, name=name, url=f"http://127.0.0.1:8082/components/{uuid}", created=NOW, modified=NOW
    )


def offer(index: int) -> ScheduledExecutionSession:
    start = NOW + timedelta(minutes=2, hours=2 * index)
    run = timedelta(hours=2)
    slot = schedule(start, timedelta(minutes=1), run)
    executable: DockerContainer | JupyterNotebook
    if index == 0:
        executable = DockerContainer(
            meta=meta("hash-tool", 10 + index),
            phase="INITIALIZING",
            schedule=slot,
            image=DockerImageSpec(
                locations=["ghcr.io/zarquan/heliophorus-androcles:sha-9a2513b"],
                digest="sha256:0dfeaad1",
                platform=DockerPlatformSpec(architecture="amd64", os="linux"),
            ),
            privileged=False,
            command=["sha256sum", "json"],
            entrypoint="/usr/bin/hash",
            environment={"INPUT": "/input"},
            network=DockerNetworkSpec(
                ports=[
                    DockerNetworkPort(
                        access=True, internal=DockerInternalPort(port=8888), protocol="HTTP", path="/"
                    )
                ]
            ),
        )
    else:
        executable = JupyterNotebook(
            meta=meta("notebook", 10 + index), phase="INITIALIZING", location="hello.ipynb"
        )
    costs = [
        SimpleMinMaxFloatCost(type="urn:ivoa:calycopis:cost:energy", description="kWh", min=0.5, max=1.5)
    ]
    metrics = [
        SimpleMinMaxFloatMetric(type="urn:ivoa:calycopis:metric:compute-performance", min=1.0, max=2.0)
    ]
    return ScheduledExecutionSession(
        meta=ComponentMetadata(
            uuid=f"00000000-0000-4000-8000-00000000010{index}",
            name=f"request-offer-{index}",
            url=f"http://127.0.0.1:8082/sessions/00000000-0000-4000-8000-00000000010{index}",
            created=NOW,
            messages=[MessageItem.warn("urn:resource-limit", "cores capped at ${max}", time=NOW, max=16)],
            options=[EnumValueOption(path="phase", values=["ACCEPTED", "REJECTED"])],
        ),
        phase="OFFERED",
        expires=NOW + timedelta(minutes=5),
        executable=executable,
        compute=SimpleComputeResource(
            meta=meta("compute", 20 + index),
            phase="INITIALIZING",
            schedule=slot,
            cores=MinMax(min=2, max=2),
            memory=MinMax(min=4, max=4),
            volumes=[
                SimpleVolumeMount(
                    path="/input", mode="READONLY", resource="00000000-0000-4000-8000-000000000040"
                )
            ],
            costs=costs,
            metrics=metrics,
        ),
        storage=[
            SimpleStorageResource(
                meta=meta("Storage for [input-data]", 30 + index),
                phase="INITIALIZING",
                size=MinMax(min=1, max=1),
                data=["00000000-0000-4000-8000-000000000040"],
            )
        ],
        data=[
            SimpleDataResource(
                meta=meta("input-data", 40),
                phase="INITIALIZING",
                storage="00000000-0000-4000-8000-000000000030",
                location="https://example.org/images/sample.jpeg",
            ),
            SkaoDataResource(
                meta=meta("skao-object", 50),
                ivoa=IvoaDataResourceBlock(ivoid="ivo://example.org/data?obj"),
                skao=SkaoDataResourceBlock(
                    namespace="testing",
                    objectname="obj",
                    objecttype="FILE",
                    datasize=1024,
                    replicas=[SkaoReplicaItem(rsename="AUSRC_STORM", dataurl="davs://ausrc.example.org/obj")],
                ),
            ),
        ],
        connectors=[
            SimpleSessionConnector(
                kind="urn:jupyter-notebook",
                status="PREPARING",
                protocol="HTTPS",
                location="https://example.org/nb",
            )
        ],
        schedule=slot,
        costs=costs,
        metrics=metrics,
    )


def yes_offerset() -> dict[str, Any]:
    response = OfferSetResponse(
        meta=ComponentMetadata(
            uuid="00000000-0000-4000-8000-000000000001",
            name="request",
            url="http://127.0.0.1:8082/offersets/00000000-0000-4000-8000-000000000001",
            created=NOW,
            messages=[MessageItem.info("urn:offers", "${count} offers", time=NOW, count=2)],
        ),
        result="YES",
        description="Two consecutive slots",
        offers=[offer(0), offer(1)],
    )
    return to_jsonable(response)


def no_offerset() -> dict[str, Any]:
    response = OfferSetResponse(
        meta=ComponentMetadata(
            uuid="00000000-0000-4000-8000-000000000002",
            created=NOW,
            messages=[
                MessageItem.error(
                    "uri:unknown-type",
                    "Unknown kind [${kind}] for the ${where} component",
                    time=NOW,
                    kind="x",
                    where="data[0]",
                )
            ],
        ),
        result="NO",
    )
    return to_jsonable(response)


def test_yes_offerset_conforms() -> None:
    document = yes_offerset()
    assert len(document["offers"]) == 2
    validate_against("OfferSetResponse", document)


def test_no_offerset_conforms() -> None:
    validate_against("OfferSetResponse", no_offerset())


def test_session_conforms() -> None:
    validate_against("ScheduledExecutionSession", to_jsonable(offer(0)))


def test_update_conforms() -> None:
    validate_against("EnumValueUpdate", to_jsonable(EnumValueUpdate(path="phase", value="ACCEPTED")))


@pytest.mark.parametrize(
    "path",
    [
        REQUESTS / "example-a-notebook.json",
        REQUESTS / "example-b-docker-volume.yaml",
        REQUESTS / "example-c-skao.yaml",
        EXAMPLES / "hello-notebook.yaml",
    ],
    ids=lambda p: p.name,
)
def test_requests_conform(path: Path) -> None:
    request = parse_execution_request(path.read_bytes())
    validate_against("ExecutionRequest", to_jsonable(request))


# -- the validator must be able to fail --------------------------------------------------------------


def test_invalid_result_is_rejected() -> None:
    document = no_offerset()
    document["result"] = "MAYBE"
    with pytest.raises(AssertionError, match="MAYBE"):
        validate_against("OfferSetResponse", document)


def test_concrete_kind_fields_are_checked() -> None:
    # The abstract AbstractComputeResource shape knows nothing of `cores`; only the concrete check does.
    document = yes_offerset()
    document["offers"][0]["compute"]["cores"]["min"] = "two"
    with pytest.raises(AssertionError, match="SimpleComputeResource"):
        validate_against("OfferSetResponse", document)


def test_bad_instant_is_rejected() -> None:
    document = to_jsonable(offer(0))
    document["schedule"]["preparing"]["start"] = "2025-11-25T05:23:00"  # no zone: the pattern needs one
    with pytest.raises(AssertionError):
        validate_against("ScheduledExecutionSession", document)


def test_bad_docker_field_is_rejected() -> None:
    document = to_jsonable(offer(0))
    assert document["executable"]["kind"] == DOCKER_CONTAINER_KIND
    broken = copy.deepcopy(document)
    broken["executable"]["privileged"] = "no"
    with pytest.raises(AssertionError, match="DockerContainer"):
        validate_against("ScheduledExecutionSession", broken)


def test_unknown_calycopis_kind_is_rejected() -> None:
    document = to_jsonable(offer(1))
    document["data"][0]["kind"] = KIND_BASE + "data/abstract-data-resource.yaml"
    with pytest.raises(AssertionError, match="no schema"):
        validate_against("ScheduledExecutionSession", document)


def test_bad_uuid_is_rejected() -> None:
    document = no_offerset()
    document["meta"]["uuid"] = "not-a-uuid"
    with pytest.raises(AssertionError, match="uuid"):
        validate_against("OfferSetResponse", document)
