"""A fake of the CANFAR skaha sessions API (launcher-targets.md §1.10, conventions in §5).

`FakeSkaha(SkahaConfig(...))` is an ASGI app; serve it with `tests.fakes.serve.serve_asgi`. It keeps
the realism rules of the real service: create answers `200 text/plain "<id>\\n"` (8 random
characters), parameters come from the query string and/or a form body (`env` repeats), delete is
always 200, error bodies are text/plain, resource fields are strings, nulls are omitted, a finished
session disappears (404, logs included) after its ttl, and a deleted one after `Terminating`.

Scenarios are picked per session from the `FAKE_SCENARIO=<name>` environment variable sent with
the session, or from the session name (`...-fail-exit-...`): ok, fail_exit, oom, stuck_pending,
vanish_after_done, slow_start. `FAKE_RUN_S` (seconds, or `forever`), `FAKE_PENDING_S` and
`FAKE_EXIT_CODE` override the timings per session.

The user's ARC storage (`/arc/files`, `/arc/nodes`, same tokens) and a headless runner that really
executes a staged notebook for a session whose command is papermill or `jupyter nbconvert` are in
tests/fakes/arc.py: such a session runs until its notebook has run, and ends Completed or Failed as
the command's exit code says; its log is the notebook's printed output.

Test control (no auth, not recorded): `/_fake/faults` and `/_fake/requests` as every fake
(tests/fakes/base.py: a fault may also match query parameters; its default body is skaha's text for
the status; a record also has `t`, the fake clock's reading), and
  POST   /_fake/tokens          {"<token>": "<user>" | null}: add or revoke tokens
  POST   /_fake/clock/advance?s=N
  GET    /_fake/sessions        every session the fake knows, with its current status (or "gone")

The API is under `SkahaConfig.base_path` (`/skaha`); set another one (`move`) and the old paths answer
404, as a service that moved. `<base_path>/capabilities` is skaha's VOSI capabilities document (public,
no token): the sessions API of each served version, with skaha's standardIDs and an interface per
security method (tests/fakes/registry.py writes it), at this server's own address.
"""

from __future__ import annotations

import math
import random
import re
import string
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.arc import ArcApi, ArcStore, RunOutcome, run_notebook, runner_command
from tests.fakes.base import FakeServer, bearer_token
from tests.fakes.clock import FakeClock
from tests.fakes.recording import request_headers
from tests.fakes.registry import CERTIFICATE, COOKIE, TOKEN, capabilities_document

SESSION_TYPES = ("notebook", "desktop", "carta", "headless", "contributed", "firefly")
NAME_PATTERN = re.compile(r"[A-Za-z0-9-]+")
SCENARIOS = ("ok", "fail_exit", "oom", "stuck_pending", "vanish_after_done", "slow_start")
GIB_IN_GB = 2**30 / 1e9
#: skaha's standardIDs [platform-and-bus-notes-2 §4]: per version, (standardID, path under the base).
SKAHA_STANDARDS = {
    "v1": [(f"http://www.opencadc.org/std/platform#{name}-1", f"/v1/{name}")
           for name in ("session", "context", "image", "repository")],
    "v0": [("vos://cadc.nrc.ca~vospace/CADC/std/Proc#sessions-1.0", "/v0")],
}  # fmt: skip
ROUTED_BASE = "/skaha"  # where the routes are; another base_path is mapped onto it


@dataclass
class SkahaConfig:
    tokens: dict[str, str] = field(default_factory=lambda: {"test-token": "alice"})
    forbidden_users: set[str] = field(default_factory=set)
    # API versions served; add "v0" for the legacy alias (or serve only "v0", as an old deployment).
    versions: tuple[str, ...] = ("v1",)
    trusted_hosts: tuple[str, ...] = ("images.canfar.net",)
    host: str = "ws-uv.canfar.net"
    base_path: str = "/skaha"
    pending_s: float = 2.0
    slow_start_pending_s: float = 6.0
    run_s: float = 2.0
    fail_after_s: float = 1.0
    term_s: float = 1.0
    ttl_headless_s: float = 3600.0
    ttl_interactive_s: float = 86400.0
    vanish_ttl_s: float = 0.0
    headless_deadline_s: float = 1209600.0
    interactive_expiry_s: float = 345600.0
    max_interactive: int = 5
    # Vocabulary switches, so a client is tested against every status the real service has sent.
    legacy_status: bool = False  # Succeeded instead of Completed
    status_error_alias: bool = False  # Error instead of Failed
    cores_options: list[int] = field(default_factory=lambda: list(range(1, 17)))
    memory_options: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128, 192])
    gpu_options: list[int] = field(default_factory=list)
    # Where sessions see the ARC storage's root (the runner maps its command's paths through it).
    arc_mount: str = "/arc"


@dataclass
class FakeSession:
    id: str
    userid: str
    name: str
    image: str
    type: str
    cores: int | None
    ram: int | None
    gpus: int | None
    cmd: str | None
    args: str | None
    env: list[str]
    scenario: str
    created: float
    pending_s: float | None  # None: Pending forever
    run_s: float | None  # None: runs until deleted (or its deadline)
    failure: str | None  # "exit" or "oom"
    exit_code: int
    ttl_s: float
    deadline_s: float
    deleted_at: float | None = None
    gone_at: float | None = None
    # A notebook run by the runner: it ends when the notebook has run (`ran_at`), as its exit code says.
    runs_notebook: bool = False
    outcome: RunOutcome | None = None
    ran_at: float | None = None


class FakeSkaha(FakeServer):
    def __init__(
        self, config: SkahaConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or SkahaConfig()
        self.clock = FakeClock(clock)
        self.sessions: dict[str, FakeSession] = {}
        self.arc = ArcStore()
        self.routes = Starlette(routes=[*self._routes(), *ArcApi(self.arc).routes()])
        super().__init__(
            self._authenticated,
            control=[
                Route("/_fake/tokens", self._set_tokens, methods=["POST"]),
                self.clock.route(),
                Route("/_fake/sessions", self._list_sessions, methods=["GET"]),
            ],
        )

    # -- clock ------------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def move(self, base_path: str) -> None:
        """Serve the API (and its capabilities) under `base_path` from now on; the old paths 404."""
        self.config.base_path = base_path.rstrip("/")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def _iso(self, t: float) -> str:
        return datetime.fromtimestamp(self.clock.wall(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    # -- session state ----------------------------------------------------------------------------

    def _start(self, s: FakeSession) -> float | None:
        return None if s.pending_s is None else s.created + s.pending_s

    def _end(self, s: FakeSession) -> tuple[float, str] | None:
        start = self._start(s)
        if start is None:
            return None
        if s.runs_notebook:
            if s.ran_at is None or s.outcome is None:
                return None  # still running its notebook
            return max(start, s.ran_at), ("Completed" if s.outcome.exit_code == 0 else "Failed")
        if s.failure is not None:
            return start + self.config.fail_after_s, "Failed"
        if s.run_s is not None and s.type == "headless":
            return min(start + s.run_s, start + s.deadline_s), (
                "Completed" if s.run_s <= s.deadline_s else "Failed"
            )
        return start + s.deadline_s, "Failed"  # interactive: until its deadline

    def status(self, s: FakeSession, now: float | None = None) -> str | None:
        """The session's status now, or None once it is gone (GET answers 404)."""
        now = self.now() if now is None else now
        if s.gone_at is not None and now >= s.gone_at:
            return None
        if s.deleted_at is not None:
            return "Terminating"
        start = self._start(s)
        if start is None or now < start:
            return "Pending"
        end = self._end(s)
        if end is None or now < end[0]:
            return "Running"
        if now >= end[0] + s.ttl_s:
            return None
        return self._vocabulary(end[1])

    def _vocabulary(self, status: str) -> str:
        if status == "Completed" and self.config.legacy_status:
            return "Succeeded"
        if status == "Failed" and self.config.status_error_alias:
            return "Error"
        return status

    def _reason(self, s: FakeSession) -> str | None:
        end = self._end(s)
        if end is None or end[1] != "Failed":
            return None
        if s.failure == "oom":
            return "OOMKilled"
        if s.failure == "exit":
            return "BackoffLimitExceeded"
        return "DeadlineExceeded"

    def session_json(self, s: FakeSession, status: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": s.id,
            "userid": s.userid,
            "runAsUID": "1001",
            "runAsGID": "1001",
            "supplementalGroups": [1001],
            "image": s.image,
            "type": s.type,
            "status": status,
            "name": s.name,
            "connectURL": self._connect_url(s),
            "isFixedResources": s.cores is not None and s.ram is not None,
            "requestedGPUCores": str(s.gpus or 0),
        }
        start = self._start(s)
        if start is not None and self.now() >= start:
            body["startTime"] = self._iso(start)
            body["expiryTime"] = self._iso(start + s.deadline_s)
        if s.cores is not None and s.ram is not None:
            body["requestedCPUCores"] = str(s.cores)
            body["requestedRAM"] = f"{s.ram * GIB_IN_GB:.2f}"
        if status == "Running":
            body["cpuCoresInUse"] = "0.001"
            body["ramInUse"] = "<none>"
        return body

    def _connect_url(self, s: FakeSession) -> str:
        base = f"https://{self.config.host}/session"
        urls = {
            "headless": "",
            "notebook": f"{base}/notebook/{s.id}/lab/tree/arc/home/{s.userid}?token={s.id}",
            "desktop": f"{base}/desktop/{s.id}?password={s.id}&path=session/desktop/{s.id}/",
            "carta": f"{base}/carta/{s.id}/",
            "contributed": f"{base}/contrib/{s.id}",
            "firefly": f"{base}/firefly/{s.id}/firefly/",
        }
        return urls[s.type]

    def logs(self, s: FakeSession, status: str) -> str:
        lines = [
            f"[fake-skaha] session {s.id} ({s.type}) image {s.image}",
            f"[fake-skaha] cmd: {s.cmd or '(image entrypoint)'}",
            f"[fake-skaha] args: {s.args or ''}",
            *(f"ENV {item}" for item in s.env),
        ]
        if status == "Pending":
            return ""
        if s.runs_notebook:
            end = self._end(s)
            if s.outcome is not None and end is not None and self.now() >= end[0]:
                lines.append(s.outcome.log.rstrip("\n"))
                if s.outcome.exit_code:
                    lines.append(f"error: the command exited with code {s.outcome.exit_code}")
            return "\n".join(lines) + "\n"
        lines.append(f"hello from {s.name}")
        end = self._end(s)
        if end is not None and self.now() >= end[0]:
            if s.failure == "oom":
                lines.append("Killed")
            elif s.failure == "exit":
                lines.append(f"error: the command exited with code {s.exit_code}")
            elif end[1] == "Failed":
                lines.append("terminated: deadline exceeded")
            else:
                lines.append("done")
        return "\n".join(lines) + "\n"

    def events(self, s: FakeSession, status: str) -> str:
        rows: list[tuple[str, str, str]] = []
        stamp = self._iso(s.created)
        if s.pending_s is None:
            rows += [
                ("Normal", "Scheduled", f"Successfully assigned skaha-workload/{s.id} to node-1"),
                ("Warning", "Failed", f'Failed to pull image "{s.image}": not found'),
                ("Warning", "BackOff", f'Back-off pulling image "{s.image}"'),
            ]
        elif status != "Pending":
            rows.append(("Normal", "Started", "Started container main"))
        reason = self._reason(s)
        if reason is not None and status in ("Failed", "Error"):
            messages = {
                "OOMKilled": "Container main was OOMKilled (exit code 137)",
                "BackoffLimitExceeded": "Job has reached the specified backoff limit "
                f"(exit code {s.exit_code})",
                "DeadlineExceeded": "Job was active longer than specified deadline",
            }
            rows.append(("Warning", reason, messages[reason]))
        if not rows:
            return "<none>\n"
        table = [("TYPE", "REASON", "MESSAGE", "FIRST-TIME", "LAST-TIME")]
        table += [(kind, why, what, stamp, stamp) for kind, why, what in rows]
        widths = [max(len(row[i]) for row in table) for i in range(5)]
        return (
            "\n".join(
                "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
            )
            + "\n"
        )

    # -- the API ----------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/skaha/{version}/session", self._create, methods=["POST"]),
            Route("/skaha/{version}/session", self._list, methods=["GET"]),
            Route("/skaha/{version}/session/{id}", self._get, methods=["GET"]),
            Route("/skaha/{version}/session/{id}", self._action, methods=["POST"]),
            Route("/skaha/{version}/session/{id}", self._delete, methods=["DELETE"]),
            Route("/skaha/{version}/context", self._context, methods=["GET"]),
            Route("/skaha/{version}/image", self._images, methods=["GET"]),
            Route("/skaha/{version}/repository", self._repositories, methods=["GET"]),
        ]

    def _served(self, request: Request) -> bool:
        return request.path_params["version"] in self.config.versions

    def _mine(self, request: Request) -> FakeSession | None:
        session = self.sessions.get(request.path_params["id"])
        if session is None or session.userid != request.state.user:
            return None
        return session

    async def _create(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        params = _params(request.query_params.multi_items(), (await request.body()).decode())
        single = {key: values[-1] for key, values in params.items()}
        user = request.state.user
        name = single.get("name", "")
        if not name or not NAME_PATTERN.fullmatch(name):
            return _text("name can only contain alpha-numeric chars and '-'", 400)
        image = single.get("image", "")
        if not image:
            return _text("image is required", 400)
        if image.split("/", 1)[0] not in self.config.trusted_hosts:
            return _text("image not in a trusted repository", 400)
        session_type = single.get("type", "headless").lower()
        if session_type not in SESSION_TYPES:
            return _text(f"unrecognized session type: {session_type}", 400)
        numbers: dict[str, int | None] = {}
        for key, options in (
            ("cores", self.config.cores_options),
            ("ram", self.config.memory_options),
            ("gpus", self.config.gpu_options),
        ):
            raw = single.get(key)
            if raw is None:
                numbers[key] = None
                continue
            try:
                value = int(float(raw))
            except ValueError:
                value = None
            if value is None or value not in options:
                return _text(f"Invalid value for '{key}': {raw}. Must be one of {options}", 400)
            numbers[key] = value
        if session_type != "headless":
            active = [
                s for s in self.sessions.values()
                if s.userid == user and s.type != "headless" and self.status(s) in ("Pending", "Running")
            ]  # fmt: skip
            if len(active) >= self.config.max_interactive:
                return _text(
                    f"User {user} has reached the maximum of {self.config.max_interactive} active sessions.",
                    400,
                )
        env = params.get("env", []) if session_type == "headless" else []
        session = self._new_session(user, name, image, session_type, numbers, single, env)
        self.sessions[session.id] = session
        if session.type == "headless" and runner_command(session.cmd, session.args):
            session.runs_notebook = True
            threading.Thread(
                target=self._run_notebook, args=(session,), daemon=True, name=f"fake-run-{session.id}"
            ).start()
        return _text(session.id + "\n", 200)

    def _new_session(
        self,
        user: str,
        name: str,
        image: str,
        session_type: str,
        numbers: dict[str, int | None],
        single: dict[str, str],
        env: list[str],
    ) -> FakeSession:
        variables = dict(item.split("=", 1) for item in env if "=" in item)
        scenario = variables.get("FAKE_SCENARIO") or next(
            (s for s in SCENARIOS if s.replace("_", "-") in name.lower()), "ok"
        )
        config = self.config
        pending: float | None = config.pending_s
        if scenario == "stuck_pending":
            pending = None
        elif scenario == "slow_start":
            pending = config.slow_start_pending_s
        if "FAKE_PENDING_S" in variables:
            pending = float(variables["FAKE_PENDING_S"])
        run: float | None = config.run_s
        if "FAKE_RUN_S" in variables:
            raw = variables["FAKE_RUN_S"]
            run = None if raw in ("forever", "inf") else float(raw)
        failure = {"fail_exit": "exit", "oom": "oom"}.get(scenario)
        interactive = session_type != "headless"
        ttl = config.ttl_interactive_s if interactive else config.ttl_headless_s
        if scenario == "vanish_after_done":
            ttl = config.vanish_ttl_s
        deadline = config.interactive_expiry_s if interactive else config.headless_deadline_s
        session_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
        while session_id in self.sessions:
            session_id = "".join(random.choices(string.ascii_lowercase + string.digits, k=8))
        return FakeSession(
            id=session_id, userid=user, name=name.lower(), image=image, type=session_type,
            cores=numbers["cores"], ram=numbers["ram"], gpus=numbers["gpus"],
            cmd=single.get("cmd") if not interactive else None,
            args=single.get("args") if not interactive else None,
            env=env, scenario=scenario, created=self.now(), pending_s=pending,
            run_s=math.inf if run is None else run, failure=failure,
            exit_code=int(variables.get("FAKE_EXIT_CODE", "3")), ttl_s=ttl, deadline_s=deadline,
        )  # fmt: skip

    def _run_notebook(self, session: FakeSession) -> None:
        try:
            outcome = run_notebook(self.arc, self.config.arc_mount, session.cmd or "", session.args or "")
        except Exception as error:  # the fake's own failure: say so in the session's log
            outcome = RunOutcome(1, f"fake runner error: {type(error).__name__}: {error}\n")
        session.outcome = outcome
        if outcome.exit_code:
            session.failure, session.exit_code = "exit", outcome.exit_code
        session.ran_at = self.now()

    async def _list(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        view = request.query_params.get("view")
        if view == "stats":
            return JSONResponse(self._stats())
        wanted_type = request.query_params.get("type")
        wanted_status = request.query_params.get("status")
        answer: list[dict[str, Any]] = []
        for session in self.sessions.values():
            status = self.status(session)
            if status is None:
                continue
            if view != "all" and session.userid != request.state.user:
                continue
            if wanted_type and session.type.lower() != wanted_type.lower():
                continue
            if wanted_status and status.lower() != wanted_status.lower():
                continue
            if view == "interactive" and session.type == "headless":
                continue
            body = self.session_json(session, status)
            if view == "all":
                body = {k: body[k] for k in ("userid", "type", "status", "startTime") if k in body}
            answer.append(body)
        return JSONResponse(answer)

    def _stats(self) -> dict[str, Any]:
        live = [s for s in self.sessions.values() if self.status(s) in ("Pending", "Running")]
        headless = sum(1 for s in live if s.type == "headless")
        return {
            "instances": {"session": len(live) - headless, "desktopApp": 0, "headless": headless,
                          "total": len(live)},
            "cores": {"requestedCPUCores": sum(s.cores or 1 for s in live), "cpuCoresAvailable": 64,
                      "maxCPUCores": {"cpuCores": 16, "withRam": "192G"}},
            "ram": {"requestedRAM": f"{sum(s.ram or 4 for s in live)}G", "ramAvailable": "512G",
                    "maxRAM": {"ram": "192G", "withCPUCores": 16}},
        }  # fmt: skip

    async def _get(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        session = self._mine(request)
        status = self.status(session) if session is not None else None
        if session is None or status is None:
            return _text(f"session {request.path_params['id']} not found", 404)
        view = request.query_params.get("view")
        if view == "logs":
            return _text(self.logs(session, status), 200)
        if view == "events":
            return _text(self.events(session, status), 200)
        return JSONResponse(self.session_json(session, status))

    async def _action(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        session = self._mine(request)
        if request.query_params.get("action") != "renew":
            return _text("unsupported action", 400)
        if session is None or self.status(session) not in ("Pending", "Running"):
            return _text("no active job for session", 400)
        session.deadline_s += self.config.interactive_expiry_s
        return _text("", 200)

    async def _delete(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        session = self._mine(request)
        if session is not None:
            status = self.status(session)
            now = self.now()
            if status in ("Pending", "Running"):
                session.deleted_at = now
                session.gone_at = now + self.config.term_s
            elif status is not None and status != "Terminating":
                session.gone_at = now  # a finished session's job goes at once, logs included
        # Delete errors are logged and swallowed by the real service: always 200.
        return _text("", 200)

    async def _context(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        config = self.config
        return JSONResponse({
            "cores": {"default": 2, "defaultRequest": 1, "defaultLimit": max(config.cores_options),
                      "options": config.cores_options},
            "memoryGB": {"default": 4, "defaultRequest": 4, "defaultLimit": max(config.memory_options),
                         "options": config.memory_options},
            "gpus": {"options": config.gpu_options},
            "maxInteractiveSessions": config.max_interactive,
        })  # fmt: skip

    async def _images(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        images = [
            {"id": "images.canfar.net/skaha/astroml:latest", "types": ["notebook", "headless"],
             "digest": "sha256:" + "a" * 64},
            {"id": "images.canfar.net/skaha/terminal:1.1.2", "types": ["headless"],
             "digest": "sha256:" + "b" * 64},
        ]  # fmt: skip
        wanted = request.query_params.get("type")
        return JSONResponse([i for i in images if not wanted or wanted in i["types"]])

    async def _repositories(self, request: Request) -> Response:
        if not self._served(request):
            return _text("Not Found", 404)
        return JSONResponse(list(self.config.trusted_hosts))

    # -- ASGI: authentication, control -----------------------------------------------------------

    async def _authenticated(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            base, path = self.config.base_path, scope["path"]
            if path == f"{base}/capabilities" and scope["method"] == "GET":
                await self._capabilities(scope)(scope, receive, send)
                return
            if base != ROUTED_BASE and path.startswith(f"{base}/"):
                scope = {**scope, "path": ROUTED_BASE + path[len(base) :]}
            elif base != ROUTED_BASE and path.startswith(f"{ROUTED_BASE}/"):
                await _text("Not Found", 404)(scope, receive, send)  # it has moved
                return
            user, refusal = self._authenticate(request_headers(scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            scope.setdefault("state", {})["user"] = user
            if user is not None:
                self.arc.add_user(user)  # every user has a home folder in ARC
        await self.routes(scope, receive, send)

    def _capabilities(self, scope: Scope) -> Response:
        base = str(Request(scope).base_url).rstrip("/") + self.config.base_path
        vosi = [("ivo://ivoa.net/std/VOSI#capabilities", f"{base}/capabilities", []),
                ("ivo://ivoa.net/std/VOSI#availability", f"{base}/availability", [])]  # fmt: skip
        sessions = [
            (standard_id, base + tail, [TOKEN, COOKIE, CERTIFICATE])
            for version in self.config.versions
            for standard_id, tail in SKAHA_STANDARDS.get(version, [])
        ]
        return Response(capabilities_document([*vosi, *sessions]), media_type="text/xml")

    def _authenticate(self, headers: dict[str, str]) -> tuple[str | None, Response | None]:
        token = bearer_token(headers.get("authorization"))
        user = self.config.tokens.get(token) if token else None
        if user is None:
            return None, _text("Unauthorized", 401)
        if user in self.config.forbidden_users:
            return None, _text(f"permission denied: {user} is not authorized to use the platform", 403)
        return user, None

    def default_fault_body(self, status: int) -> Any:
        if status == 500:
            return "java.lang.RuntimeException: injected failure"
        if status == 503:
            return "service busy, try again later"
        if status == 401:
            return "Unauthorized"
        return f"injected HTTP {status}"

    def record_extra(self, headers: Mapping[str, str]) -> dict[str, Any]:
        return {"t": self.now()}

    async def _set_tokens(self, request: Request) -> Response:
        for token, user in (await request.json()).items():
            if user is None:
                self.config.tokens.pop(token, None)
            else:
                self.config.tokens[token] = user
        return JSONResponse({"tokens": len(self.config.tokens)})

    async def _list_sessions(self, request: Request) -> Response:
        return JSONResponse([
            {"id": s.id, "name": s.name, "scenario": s.scenario, "status": self.status(s) or "gone"}
            for s in self.sessions.values()
        ])  # fmt: skip


def _params(query: list[tuple[str, str]], form: str) -> dict[str, list[str]]:
    """skaha (cadc-rest SyncInput) reads parameters from the query string and the form body alike."""
    params: dict[str, list[str]] = {}
    for key, value in [*query, *parse_qsl(form, keep_blank_values=True)]:
        params.setdefault(key, []).append(value)
    return params


def _text(body: str, status: int) -> Response:
    return PlainTextResponse(body, status_code=status)
