"""Where skaha's sessions API is and which version it speaks, from its VOSI capabilities (pure).

skaha describes its APIs by standardID [platform-and-bus-notes-2 §4]: v1 as
``http://www.opencadc.org/std/platform#session-1`` with the accessURL ``<base>/v1/session`` (and
``#context-1``, ``#image-1``, ``#repository-1`` beside it), v0 as
``vos://cadc.nrc.ca~vospace/CADC/std/Proc#sessions-1.0`` with ``<base>/v0``. The client builds its
paths as ``<base>/<api>/<resource>``, so the base URL is the accessURL without that tail; an
accessURL that does not end in it is refused rather than guessed at.

The configured version (EB_CANFAR_API, v1 by default) is taken when the service offers it, the other
one when it is all the service offers.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.launcher.platforms.canfar.settings import ApiVersion
from shared.ivoa.registry import Capability, DiscoveryError, access_url, checked_url, quoted

SESSIONS_V1 = "http://www.opencadc.org/std/platform#session-1"
SESSIONS_V0 = "vos://cadc.nrc.ca~vospace/CADC/std/Proc#sessions-1.0"
#: Per API version: the standardID of its sessions capability, and the tail of that accessURL.
STANDARDS: dict[ApiVersion, tuple[str, str]] = {
    "v1": (SESSIONS_V1, "/v1/session"),
    "v0": (SESSIONS_V0, "/v0"),
}


@dataclass(frozen=True)
class SkahaEndpoint:
    base_url: str
    api: ApiVersion


def skaha_endpoint(capabilities: tuple[Capability, ...], preferred: ApiVersion) -> SkahaEndpoint:
    order: list[ApiVersion] = [preferred, *(api for api in STANDARDS if api != preferred)]
    for api in order:
        standard_id, tail = STANDARDS[api]
        found = access_url(capabilities, standard_id)
        if found is None:
            continue
        url = checked_url(found, f"the accessURL of {standard_id}").rstrip("/")
        if not url.endswith(tail) or len(url) == len(tail):
            raise DiscoveryError(
                f"the accessURL of {standard_id}, {quoted(url)}, does not end in {tail}: the base URL "
                "of the sessions API cannot be told from it"
            )
        return SkahaEndpoint(url[: -len(tail)], api)
    raise DiscoveryError(
        f"the capabilities describe no skaha sessions API (standardID {SESSIONS_V1} or {SESSIONS_V0})"
    )
