"""A fake IVOA registry as the CADC clients read it, and the VOSI capabilities documents fakes serve.

`FakeRegistry()` is an ASGI app (serve it with `tests.fakes.serve.serve_asgi`) answering
``GET /reg/resource-caps`` as CADC's registry does: ``text/plain``, ``#`` comments, one
``<ivoid> = <capabilities URL>`` per line [platform-and-bus-notes-2 §4]. Its entries are
`FakeRegistry.entries` (change them to move a service); `body`, when set, is served instead, for
hostile documents. Requests are recorded and faults injected as for every fake (tests/fakes/base.py).

Test control (no auth, not recorded):
  POST /_fake/resource-caps   {"<ivoid>": "<capabilities URL>" | null}: add, change or drop entries

`capabilities_document` writes a VOSI capabilities document (VOSICapabilities v1.0, interfaces of
type vs:ParamHTTP, one interface per security method as skaha lists them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from xml.etree import ElementTree as ET

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeServer

VOSI_CAPABILITIES_NS = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
VS_NS = "http://www.ivoa.net/xml/VODataService/v1.1"
VR_NS = "http://www.ivoa.net/xml/VOResource/v1.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
TOKEN = "ivo://ivoa.net/sso#token"
COOKIE = "ivo://ivoa.net/sso#cookie"
CERTIFICATE = "ivo://ivoa.net/sso#tls-with-certificate"
HEADER = "# resource-caps: IVOA resource identifier = capabilities URL\n# (a fake registry)\n\n"


def capabilities_document(capabilities: Iterable[tuple[str, str, Sequence[str | None]]]) -> bytes:
    """A VOSI capabilities document of (standardID, accessURL, security method IDs) entries; a
    None method is an empty securityMethod (anonymous), no methods at all an interface without one."""
    ET.register_namespace("vosi", VOSI_CAPABILITIES_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(f"{{{VOSI_CAPABILITIES_NS}}}capabilities", {"xmlns:vs": VS_NS, "xmlns:vr": VR_NS})
    for standard_id, url, methods in capabilities:
        capability = ET.SubElement(root, "capability", standardID=standard_id)
        for method in list(methods) or [""]:  # "": an interface with no securityMethod at all
            interface = ET.SubElement(
                capability, "interface", {f"{{{XSI_NS}}}type": "vs:ParamHTTP", "role": "std"}
            )
            ET.SubElement(interface, "accessURL", use="base").text = url
            if method is None:
                ET.SubElement(interface, "securityMethod")
            elif method != "":
                ET.SubElement(interface, "securityMethod", standardID=method)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


class FakeRegistry(FakeServer):
    def __init__(self, entries: dict[str, str] | None = None) -> None:
        self.entries: dict[str, str] = dict(entries or {})
        self.body: bytes | None = None
        super().__init__(
            Starlette(routes=[Route("/reg/resource-caps", self._resource_caps, methods=["GET"])]),
            control=[Route("/_fake/resource-caps", self._set_entries, methods=["POST"])],
        )

    def resource_caps(self) -> bytes:
        lines = "".join(f"{ivoid} = {url}\n" for ivoid, url in self.entries.items())
        return (HEADER + lines).encode()

    async def _resource_caps(self, request: Request) -> Response:
        body = self.body if self.body is not None else self.resource_caps()
        return Response(body, media_type="text/plain")

    async def _set_entries(self, request: Request) -> Response:
        changes = await request.json()
        if not isinstance(changes, dict):
            return PlainTextResponse("a JSON object of identifier: URL or null", status_code=422)
        for ivoid, url in changes.items():
            if url is None:
                self.entries.pop(ivoid, None)
            else:
                self.entries[ivoid] = str(url)
        return JSONResponse({"entries": len(self.entries)})
