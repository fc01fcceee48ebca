"""A fake Rucio replica service (launcher-targets.md §4.1, §4.6; fake conventions in §5).

`FakeRucio(catalogue)` is an ASGI app; serve it with `tests.fakes.serve.serve_asgi`.

API (as the real server):
  GET /replicas/{scope}/{name}   NDJSON (`application/x-json-stream`), one object per file:
      {"scope", "name", "bytes", "md5", "adler32", "rses": {RSE: [pfn]}, "pfns": {pfn: {...}}}
      * `X-Rucio-Auth-Token` required (401 CannotAuthenticate otherwise);
      * `Accept` other than NDJSON, `*/*` or metalink → 406;
      * a dataset expands to its files; a file with no replica yields one object with empty
        `rses`/`pfns`; only AVAILABLE replicas are listed unless `all_states=true`, which lists every
        replica and adds `states`;
      * `schemes=davs,https` filters PFNs by scheme; `select=geoip` sorts RSEs by the configured
        distance table (unknown RSEs last), `select=random` shuffles them;
      * unknown DID → 404 DataIdentifierNotFound; errors are JSON `{"ExceptionClass",
        "ExceptionMessage"}` with the same values in the `ExceptionClass`/`ExceptionMessage` headers.

  GET /auth/userpass             a token, as the real server: `X-Rucio-Account`, `X-Rucio-Username`
      and `X-Rucio-Password` are checked against `RucioCatalogue.accounts`; the answer carries the
      token in `X-Rucio-Auth-Token` and its end in `X-Rucio-Auth-Token-Expires`
      (`Thu, 03 Dec 2026 22:00:00 UTC`), `token_lifetime_s` after the fake's clock (whole seconds);
      wrong or missing credentials → 401 CannotAuthenticate. A token past its end is refused (401
      CannotAuthenticate) everywhere; tokens added by hand (`tokens`, `/_fake/tokens`) never end.

Test control (no auth, not recorded): `/_fake/faults` and `/_fake/requests` as every fake
(tests/fakes/base.py; an injected fault's default body is a JSON RucioException), and
  POST   /_fake/tokens     {"<token>": true | false}: add or revoke tokens
  POST   /_fake/files      {"scope", "name", "bytes", "replicas": {RSE: [pfn]}, "states": {RSE: state}}
  POST   /_fake/datasets   {"scope", "name", "files": [[scope, name], ...]}
  DELETE /_fake/replicas/{rse}/{scope}/{name}   a replica disappears (between offer and launch)
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.base import FakeServer

NDJSON = "application/x-json-stream"
METALINK = "application/metalink4+xml"
ACCEPTABLE = (NDJSON, METALINK, "*/*", "application/*")


@dataclass
class FakeFile:
    bytes: int | None
    #: RSE → PFNs.
    replicas: dict[str, list[str]] = field(default_factory=dict)
    #: RSE → state (AVAILABLE when absent): COPYING, UNAVAILABLE, BEING_DELETED, ...
    states: dict[str, str] = field(default_factory=dict)


@dataclass
class RucioCatalogue:
    files: dict[tuple[str, str], FakeFile] = field(default_factory=dict)
    datasets: dict[tuple[str, str], list[tuple[str, str]]] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=lambda: {"test-token"})
    #: (account, username) → password, for `/auth/userpass`.
    accounts: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Token → the epoch second it ends at (tokens issued by `/auth/userpass`).
    expiry: dict[str, float] = field(default_factory=dict)
    #: How many tokens `/auth/userpass` has issued.
    issued: int = 0
    #: RSE → distance, for `select=geoip`.
    distances: dict[str, float] = field(default_factory=dict)

    def add_file(
        self,
        scope: str,
        name: str,
        size: int | None,
        rses: list[str] | dict[str, list[str]],
        states: dict[str, str] | None = None,
    ) -> None:
        """Add a file; `rses` as names (PFNs are made up: `davs://<rse>.example.org:443/<scope>/<name>`)
        or as a mapping RSE → PFNs."""
        replicas = rses if isinstance(rses, dict) else {
            rse: [f"davs://{rse.lower().replace('_', '-')}.example.org:443/{scope}/{name}"] for rse in rses
        }
        self.files[(scope, name)] = FakeFile(bytes=size, replicas=dict(replicas), states=dict(states or {}))

    def add_dataset(self, scope: str, name: str, files: list[tuple[str, str]]) -> None:
        self.datasets[(scope, name)] = list(files)

    def remove_replica(self, rse: str, scope: str, name: str) -> None:
        file = self.files.get((scope, name))
        if file is not None:
            file.replicas.pop(rse, None)
            file.states.pop(rse, None)


def _error(status: int, exception_class: str, message: str) -> Response:
    return JSONResponse(
        {"ExceptionClass": exception_class, "ExceptionMessage": message},
        status_code=status,
        headers={"ExceptionClass": exception_class, "ExceptionMessage": message},
    )


def _checksum(scope: str, name: str) -> tuple[str, str]:
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    return digest, digest[:8]


class FakeRucio(FakeServer):
    fault_media_type = "application/json"

    def __init__(
        self,
        catalogue: RucioCatalogue | None = None,
        *,
        seed: int = 0,
        token_lifetime_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalogue = catalogue or RucioCatalogue()
        self._random = random.Random(seed)
        self.token_lifetime_s = token_lifetime_s
        #: Epoch seconds; a test may pass a clock it moves itself.
        self.clock = clock
        super().__init__(
            self._api,
            control=[
                Route("/_fake/tokens", self._set_tokens, methods=["POST"]),
                Route("/_fake/files", self._add_file, methods=["POST"]),
                Route("/_fake/datasets", self._add_dataset, methods=["POST"]),
                Route("/_fake/replicas/{rse}/{scope}/{name:path}", self._remove_replica, methods=["DELETE"]),
            ],
        )

    def default_fault_body(self, status: int) -> Any:
        return {"ExceptionClass": "RucioException", "ExceptionMessage": "injected failure"}

    # -- the API ------------------------------------------------------------------------------------

    def userpass(self, headers: dict[str, str]) -> Response:
        account, username = headers.get("x-rucio-account", ""), headers.get("x-rucio-username", "")
        password = headers.get("x-rucio-password")
        known = self.catalogue.accounts.get((account, username))
        if known is None or password is None or not secrets.compare_digest(known, password):
            return _error(
                401, "CannotAuthenticate", f"Cannot authenticate to account {account} with given credentials"
            )
        token = f"{account}-{username}-{secrets.token_hex(16)}"
        ends = float(int(self.clock() + self.token_lifetime_s))  # the header says whole seconds
        self.catalogue.tokens.add(token)
        self.catalogue.expiry[token] = ends
        self.catalogue.issued += 1
        expires = datetime.fromtimestamp(ends, UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
        return Response(
            "", headers={"X-Rucio-Auth-Token": token, "X-Rucio-Auth-Token-Expires": expires}
        )

    def authenticated(self, headers: dict[str, str]) -> bool:
        token = headers.get("x-rucio-auth-token")
        if not token or token not in self.catalogue.tokens:
            return False
        ends = self.catalogue.expiry.get(token)
        return ends is None or self.clock() < ends

    def replicas(self, request_path: str, query: dict[str, str], headers: dict[str, str]) -> Response:
        if not self.authenticated(headers):
            return _error(401, "CannotAuthenticate", "Cannot authenticate with given credentials")
        accept = headers.get("accept", NDJSON)
        if not any(kind in accept for kind in ACCEPTABLE):
            return _error(406, "UnsupportedRequestedContentType", f"Unsupported content type: {accept}")
        scope_name = request_path.removeprefix("/replicas/")
        scope, sep, name = scope_name.partition("/")
        if not sep or not scope or not name:
            return _error(400, "ValueError", f"cannot parse scope and name from {scope_name!r}")
        key = (scope, name)
        if key in self.catalogue.datasets:
            dids = self.catalogue.datasets[key]
        elif key in self.catalogue.files:
            dids = [key]
        else:
            return _error(404, "DataIdentifierNotFound", f"Data identifier '{scope}:{name}' not found")
        schemes = [s for s in query.get("schemes", "").split(",") if s]
        all_states = query.get("all_states", "").lower() in ("true", "1")
        lines = [
            json.dumps(self._file_object(did, schemes, query.get("select"), all_states))
            for did in dids
            if did in self.catalogue.files
        ]
        body = "".join(line + "\n" for line in lines)
        return Response(body, media_type=NDJSON)

    def _file_object(
        self, did: tuple[str, str], schemes: list[str], select: str | None, all_states: bool
    ) -> dict[str, Any]:
        scope, name = did
        file = self.catalogue.files[did]
        rses = [
            rse for rse in file.replicas
            if all_states or file.states.get(rse, "AVAILABLE") == "AVAILABLE"
        ]
        if select == "geoip":
            rses.sort(key=lambda rse: self.catalogue.distances.get(rse, float("inf")))
        elif select == "random":
            self._random.shuffle(rses)
        listed: dict[str, list[str]] = {}
        pfns: dict[str, dict[str, Any]] = {}
        for priority, rse in enumerate(rses, start=1):
            kept = [p for p in file.replicas[rse] if not schemes or urlsplit(p).scheme in schemes]
            if not kept:
                continue
            listed[rse] = kept
            for pfn in kept:
                pfns[pfn] = {"rse": rse, "rse_id": hashlib.md5(rse.encode()).hexdigest(), "type": "DISK",
                             "volatile": False, "domain": "wan", "priority": priority,
                             "client_extract": False}
        md5, adler32 = _checksum(scope, name)
        item: dict[str, Any] = {"scope": scope, "name": name, "bytes": file.bytes, "md5": md5,
                                "adler32": adler32, "rses": listed, "pfns": pfns}
        if all_states:
            item["states"] = {rse: file.states.get(rse, "AVAILABLE") for rse in listed}
        return item

    # -- ASGI and control ---------------------------------------------------------------------------

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        method, path = request.method, request.url.path
        headers = {k.lower(): v for k, v in request.headers.items()}
        if method == "GET" and path.startswith("/replicas/"):
            query = dict(parse_qsl(request.url.query, keep_blank_values=True))
            response = self.replicas(path, query, headers)
        elif method == "GET" and path == "/auth/userpass":
            response = self.userpass(headers)
        else:
            response = _error(404, "NotFound", f"no route {method} {path}")
        await response(scope, receive, send)

    async def _set_tokens(self, request: Request) -> Response:
        for token, valid in (await request.json()).items():
            if valid:
                self.catalogue.tokens.add(token)
            else:
                self.catalogue.tokens.discard(token)
        return JSONResponse(sorted(self.catalogue.tokens))

    async def _add_file(self, request: Request) -> Response:
        spec = await request.json()
        self.catalogue.add_file(spec["scope"], spec["name"], spec.get("bytes"),
                                spec.get("replicas", {}), spec.get("states"))
        return JSONResponse({"files": len(self.catalogue.files)})

    async def _add_dataset(self, request: Request) -> Response:
        spec = await request.json()
        files = [(str(f[0]), str(f[1])) for f in spec["files"]]
        self.catalogue.add_dataset(spec["scope"], spec["name"], files)
        return JSONResponse({"datasets": len(self.catalogue.datasets)})

    async def _remove_replica(self, request: Request) -> Response:
        rse, scope, name = (request.path_params[key] for key in ("rse", "scope", "name"))
        self.catalogue.remove_replica(rse, scope, name)
        return JSONResponse({"removed": [rse, scope, name]})
