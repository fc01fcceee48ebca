"""The user's ARC storage through CANFAR's VOSpace service (cavern), with skaha's bearer token.

The wire format (platform-and-bus-notes-2.md §3):
* `PUT <storage>/files/<path>`: the body becomes the file (a data node), made or overwritten; the
  parent folder must exist (404 otherwise); a `Digest: md5=<base64>` header is checked by the
  service (412 on a mismatch); 201 on success.
* `GET <storage>/files/<path>`: the file's bytes (404 when there is none).
* `PUT <storage>/nodes/<path>` with a `vos:ContainerNode` document (`text/xml`) makes a folder:
  201, or 409 when it exists already.
* `GET <storage>/nodes/<path>`: the node document, a folder's children in `vos:nodes`.
Paths are relative to the storage's root (`home/<user>/…`) and come from `notebooks.StagedNotebook`,
which checks every segment; the route of each span names the API, never the path.
"""

from __future__ import annotations

import base64
import hashlib
from xml.etree import ElementTree

import httpx
from opentelemetry.trace import TracerProvider

from services.launcher.platforms.canfar.client import SkahaClient
from services.launcher.platforms.canfar.settings import CanfarSettings
from shared.http.tokens import TokenSource
from shared.platforms.port import PlatformError

VOS_NS = "http://www.ivoa.net/xml/VOSpace/v2.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
# A folder listing is small; a bigger answer is not read (it is not what we asked for).
MAX_LISTING_BYTES = 2 * 2**20


def container_node(authority: str, path: str) -> str:
    """The VOSpace 2.x document of a folder (vos:ContainerNode) to create at `path`."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<vos:node xmlns:vos="{VOS_NS}" xmlns:xsi="{XSI_NS}" '
        f'uri="vos://{authority}/{path}" xsi:type="vos:ContainerNode"/>\n'
    )


def md5_digest(content: bytes) -> str:
    """RFC 3230 `Digest` header value, as cadc-rest reads and writes it."""
    return "md5=" + base64.b64encode(hashlib.md5(content, usedforsecurity=False).digest()).decode()


def children(document: bytes) -> list[str]:
    """The names of the children listed in a VOSpace node document (empty for a data node)."""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        raise PlatformError("CANFAR storage answered a folder listing that is not a VOSpace node") from None
    nodes = root.find(f"{{{VOS_NS}}}nodes")
    names: list[str] = []
    for node in nodes if nodes is not None else []:
        uri = node.get("uri") or ""
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        if name:
            names.append(name)
    return names


class ArcStorage:
    def __init__(
        self,
        settings: CanfarSettings,
        tokens: TokenSource,
        *,
        tracer_provider: TracerProvider | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._client = SkahaClient(
            settings,
            base_url=settings.storage_url or "http://arc.invalid",
            tokens=tokens,
            tracer_provider=tracer_provider,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def make_folder(self, path: str) -> None:
        """Make the folder `path` (its parent must exist); one that exists already is fine."""
        await self._client.request(
            "PUT", f"/nodes/{path}", ok=(200, 201, 409), route="/nodes/{path}",
            content=container_node(self.settings.storage_authority, path).encode(),
            headers={"Content-Type": "text/xml"},
        )  # fmt: skip

    async def upload(self, path: str, content: bytes) -> None:
        digest = md5_digest(content)
        response = await self._client.request(
            "PUT", f"/files/{path}", ok=(200, 201), route="/files/{path}", content=content,
            headers={"Content-Type": "application/octet-stream", "Digest": digest},
        )  # fmt: skip
        answered = response.headers.get("digest")
        if answered and answered != digest:
            raise PlatformError(
                f"CANFAR storage kept a different file than the one sent to {path} "
                f"(digest {answered}, sent {digest})",
                transient=True,
            )

    async def download(self, path: str, max_bytes: int) -> bytes | None:
        """The file at `path` (at most `max_bytes`), None when there is none."""
        return await self._client.download(f"/files/{path}", max_bytes, route="/files/{path}")

    async def listing(self, path: str) -> list[str] | None:
        """The names in the folder `path`; None when there is no such folder."""
        content = await self._client.download(f"/nodes/{path}", MAX_LISTING_BYTES, route="/nodes/{path}")
        return None if content is None else children(content)
