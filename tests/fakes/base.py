"""What every fake server does around its API: test control, request recording, injected faults.

A fake is a `FakeServer` subclass (an ASGI app; serve it with `tests.fakes.serve.serve_asgi`) built
with the ASGI app of its API and its own control routes. For an API request it:

1. records it (`tests.fakes.recording`), its answer's status included;
2. takes the first matching injected fault (`tests.fakes.faults`): a fault with a status answers in
   the API's place, one without delays the API's answer;
3. hands it to the API otherwise (authentication is the API's: faults come before it, as a proxy's
   or a load balancer's would).

Control, under `/_fake/` and neither recorded nor faulted (a fake adds its own routes):
  POST   /_fake/faults     a fault (see faults.py) → {"faults": <count>}; 422 {"error"} if invalid
  GET    /_fake/faults     the faults still waiting
  DELETE /_fake/faults
  GET    /_fake/requests   every API request received, oldest first (see recording.py)
  DELETE /_fake/requests
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.fakes.faults import Fault, Faults
from tests.fakes.recording import RequestLog, request_headers


class FakeServer:
    #: The content type of an injected fault's string body (None: no Content-Type, as a bare proxy).
    fault_media_type: str | None = "text/plain"

    def __init__(self, api: ASGIApp, control: Sequence[BaseRoute] = ()) -> None:
        self.api = api
        self.faults = Faults()
        self.requests = RequestLog()
        self.control = Starlette(
            routes=[
                Route("/_fake/faults", self._add_fault, methods=["POST"]),
                Route("/_fake/faults", self._list_faults, methods=["GET"]),
                Route("/_fake/faults", self._clear_faults, methods=["DELETE"]),
                Route("/_fake/requests", self._list_requests, methods=["GET"]),
                Route("/_fake/requests", self._clear_requests, methods=["DELETE"]),
                *control,
            ]
        )

    # -- for tests in the same process -----------------------------------------------------------

    def add_fault(self, spec: Mapping[str, Any]) -> None:
        self.faults.add(spec)

    def recorded(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """The API requests with this method and a path that is or matches this glob (None: any)."""
        return self.requests.select(method, path)

    # -- what a fake may change ------------------------------------------------------------------

    def default_fault_body(self, status: int) -> Any:
        """The body of an injected fault that gives none: a string, or a value sent as JSON."""
        return ""

    def record_extra(self, headers: Mapping[str, str]) -> dict[str, Any]:
        """More to record of a request, from its headers as sent (secrets included: never record those)."""
        return {}

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        if scope["path"].startswith("/_fake/"):
            await self.control(scope, receive, send)
            return
        body = await _read_body(receive)
        record = self.requests.record(scope, body, **self.record_extra(request_headers(scope)))
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        fault = self.faults.take(scope["method"], scope["path"], query)

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
            # The client may have gone (it timed out): a real server would not notice either.
            with contextlib.suppress(OSError):
                await send(message)

        if fault is not None and fault.status is not None:
            await asyncio.sleep(fault.delay_s)
            await self._fault_response(fault, fault.status)(scope, receive, answer)
            return
        if fault is None or not fault.delay_s:
            await self.api(scope, _replay(body, receive), answer)
            return
        # Do the work, then hold the answer back: the client may time out although the server acted.
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.api(scope, _replay(body, receive), hold)
        await asyncio.sleep(fault.delay_s)
        for message in held:
            await answer(message)

    def _fault_response(self, fault: Fault, status: int) -> Response:
        body = self.default_fault_body(status) if fault.body is None else fault.body
        if isinstance(body, str):
            return Response(body, status_code=status, headers=fault.headers, media_type=self.fault_media_type)
        return JSONResponse(body, status_code=status, headers=fault.headers)

    # -- control ---------------------------------------------------------------------------------

    async def _add_fault(self, request: Request) -> Response:
        try:
            count = self.faults.add(await request.json())
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=422)
        return JSONResponse({"faults": count})

    async def _list_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.specs())

    async def _clear_faults(self, request: Request) -> Response:
        self.faults.clear()
        return JSONResponse({"faults": 0})

    async def _list_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests.select())

    async def _clear_requests(self, request: Request) -> Response:
        self.requests.clear()
        return JSONResponse([])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case), else None."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then waits as the server's would (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
