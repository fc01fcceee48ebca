"""What a request must say for any platform to run it, judged when the request is parsed.

Why at parse time: these rules hold whatever pool would run the request (no platform publishes a
port protocol the schema does not list, or fetches data that says nowhere where it is), so they are
refused with the other document errors, each naming its path, before any pool is asked. Rules that
depend on the pool (privileged containers, a pool's per-request storage limit) are the offers
service's, when it chooses the pools (`services.offers.domain`). A port outside 1-65535 is already
refused by the model itself (`shared.models.limits.ContainerPort`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from shared.models.codes import INVALID_VALUE, MISSING_VALUE
from shared.models.executables import DockerContainer
from shared.models.messages import MessageItem
from shared.models.resources import IvoaDataResource, S3DataResource, SimpleDataResource
from shared.models.sessions import ExecutionRequest

#: The protocols the published schema lists for a `DockerNetworkPort` ("typically one of
#: [UDP, TCP, HTTP, HTTPS]", kinds/executable/docker-container.yaml; a test reads that list from the
#: schema file and compares). Upper case, as the schema writes them.
PORT_PROTOCOLS: Final = ("UDP", "TCP", "HTTP", "HTTPS")

#: What locates an S3 item: without any one of them there is no URL to fetch from.
S3_LOCATORS: Final = ("endpoint", "template", "bucket")

_MAX_SHOWN: Final = 80


def _shown(value: object) -> str:
    """A client's value for a message: cut, control characters escaped (it may be hostile)."""
    text = value if isinstance(value, str) else repr(value)
    text = text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…"
    return text.encode("unicode_escape").decode("ascii")


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def _name(item: Any, where: str) -> str:
    return _shown(item.meta.name) if item.meta and item.meta.name else where


def port_problems(request: ExecutionRequest, now: datetime | None) -> list[MessageItem]:
    executable = request.executable
    if not isinstance(executable, DockerContainer) or executable.network is None:
        return []
    problems = []
    for index, port in enumerate(executable.network.ports or []):
        if port.protocol is not None and port.protocol not in PORT_PROTOCOLS:
            problems.append(
                MessageItem.error(
                    INVALID_VALUE,
                    "Invalid value [${value}] at ${path}: the protocol must be one of ${protocols}",
                    time=now,
                    value=_shown(port.protocol),
                    path=f"executable.network.ports[{index}].protocol",
                    protocols=", ".join(PORT_PROTOCOLS),
                )
            )
    return problems


def _missing(where: str, name: str, fields: list[str], what: str, now: datetime | None) -> MessageItem:
    return MessageItem.error(
        MISSING_VALUE,
        "The data resource '${name}' (${where}) cannot be located, ${fields} missing: ${what}",
        time=now,
        name=name,
        where=where,
        fields=", ".join(fields),
        what=what,
    )


def locator_problems(request: ExecutionRequest, now: datetime | None) -> list[MessageItem]:
    """Each data item must say where its bytes are, in the fields of its own kind."""
    problems = []
    for index, item in enumerate(request.data or []):
        where = f"data[{index}]"
        name = _name(item, where)
        if isinstance(item, SimpleDataResource) and _blank(item.location):
            problems.append(
                _missing(
                    where, name, ["location"], "a simple data resource is fetched from its location", now
                )
            )
        elif isinstance(item, S3DataResource):
            missing = [field for field in S3_LOCATORS if _blank(getattr(item, field))]
            if missing:
                problems.append(
                    _missing(
                        where,
                        name,
                        missing,
                        "an S3 data resource needs its endpoint, URL template and bucket",
                        now,
                    )
                )
        elif isinstance(item, IvoaDataResource):
            block = item.ivoa
            # An ivoid (an SRCNet data product, `shared.models.data_products`) or the ObsCore or
            # DataLink rows of the block locate the data; a missing or empty block locates nothing.
            if block is None or (_blank(block.ivoid) and block.obscore is None and block.datalink is None):
                problems.append(
                    _missing(
                        where,
                        name,
                        ["ivoa block (ivoa.ivoid, ivoa.obscore or ivoa.datalink)"],
                        "an IVOA data resource is found through its identifier or its ObsCore or "
                        "DataLink access URL",
                        now,
                    )
                )
    return problems


def runnable_problems(request: ExecutionRequest, now: datetime | None) -> list[MessageItem]:
    return [*port_problems(request, now), *locator_problems(request, now)]
