"""The `canfar` platform: runs a session as a CANFAR Science Platform session (the skaha API).

A DockerContainer runs as a `headless` session (or the configured EB_CANFAR_SESSION_TYPE) of the
image in `image.locations[0]`. A JupyterNotebook is first staged: the launcher fetches it (http(s)
only, `allowed_hosts` as on the local platform) and puts it in the user's ARC storage, in a folder of
its own per session (`home/<user>/<EB_CANFAR_STORAGE_FOLDER>/<session name>/`, through the storage
API with the same token: `storage.py`). Then, by its `notebook_mode`:
* `interactive` (the default): a `notebook` session of EB_CANFAR_NOTEBOOK_IMAGE; while it runs, its
  connector is the JupyterLab URL that opens the staged notebook;
* `batch`: a `headless` session of EB_CANFAR_BATCH_IMAGE runs papermill (or nbconvert) on it, which
  writes `executed-<name>` beside it; the plugin fetches that copy into the work dir (an output) and
  judges it: COMPLETED with the tail of what the notebook printed, or FAILED with the failed cell.
A SimpleDataResource with an http(s) location is staged in the same folder, as `data/<name>`.
The handle holds the skaha session id, the API version, when the session was created and, for a
notebook, its mode and where it was staged, so a restarted launcher finds the run again. The
outcome, the logs and the platform's events are written to the work dir as soon as the session ends,
because skaha removes a finished session (and its logs) after a ttl; later polls answer from that
record.

Settings: `CanfarSettings` (canfar/settings.py), from keyword arguments or `EB_CANFAR_*` variables;
the base URL is given, or found through an IVOA registry (canfar/discovery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import httpx
import nbformat
from opentelemetry.trace import TracerProvider

from services.launcher.platforms.canfar.client import SkahaClient
from services.launcher.platforms.canfar.discovery import TRACER_NAME
from services.launcher.platforms.canfar.notebooks import (
    StagedNotebook,
    batch_command,
    data_file_name,
    folders_to_make,
    notebook_file_name,
    notebook_mode,
    notebook_url,
    read_executed,
    session_folder,
    vos_uri,
)
from services.launcher.platforms.canfar.settings import API_VERSIONS, CanfarSettings
from services.launcher.platforms.canfar.storage import ArcStorage
from services.launcher.platforms.files import read_json_object, write_json_atomically
from services.launcher.platforms.local.fetch import Fetcher
from services.launcher.platforms.local.locations import LocationRules
from shared.http.retry import CallState
from shared.http.rules import first_line
from shared.models import (
    DOCKER_CONTAINER_KIND,
    JUPYTER_NOTEBOOK_KIND,
    SIMPLE_DATA_KIND,
    NotebookMode,
    normalise_kind,
)
from shared.platforms.port import (
    LaunchSpec,
    PlatformBase,
    PlatformError,
    RunState,
    RunStatus,
)

log = logging.getLogger(__name__)

RESULT_FILE = "canfar-result.json"
STATE_FILE = "canfar-state.json"
LOG_FILE = "canfar-session.log"
EVENTS_FILE = "canfar-events.txt"
EXECUTED_FILE = "output.ipynb"  # the executed notebook of a batch run, fetched back from ARC

# skaha accepts [A-Za-z0-9-]+ and stores the name lower-cased. It states no length limit; we keep
# names short (the name also appears in Kubernetes labels, at most 63 characters).
NAME_MAX = 40
SUCCEEDED_STATUSES = frozenset({"Completed", "Succeeded"})
FAILED_STATUSES = frozenset({"Failed", "Error"})
RUNNING_STATUSES = frozenset({"Running", "Terminating"})
# Two 404s in a row before a session counts as gone: one could be a passing glitch of a proxy.
MISSING_POLLS_TO_GIVE_UP = 2
LOG_TAIL_LINES = 5
MESSAGE_LIMIT = 2000


class CanfarHandle(NamedTuple):
    id: str
    api: str
    name: str
    created: float  # wall-clock seconds, when the session was created (for the pending timeout)
    # A notebook's: how it runs and where it was staged; None for a container.
    mode: NotebookMode | None = None
    staged: StagedNotebook | None = None


def _handle(
    session_id: str,
    api: str,
    name: str,
    created: float,
    mode: NotebookMode | None,
    staged: StagedNotebook | None,
) -> str:
    data: dict[str, Any] = {"type": "canfar", "id": session_id, "api": api, "name": name, "created": created}
    if mode is not None and staged is not None:
        data |= {"mode": mode.value, "folder": staged.folder, "notebook": staged.name}
    return json.dumps(data)


def _parse_handle(handle: str) -> CanfarHandle:
    try:
        data = json.loads(handle)
        if data["type"] == "canfar" and re.fullmatch(r"[A-Za-z0-9]+", data["id"]):
            api = data.get("api", "v1")
            if api in API_VERSIONS:
                mode = NotebookMode(data["mode"]) if "mode" in data else None
                staged = StagedNotebook.checked(data["folder"], data["notebook"]) if mode else None
                return CanfarHandle(
                    data["id"], api, str(data.get("name", "")), float(data["created"]), mode, staged
                )
    except (ValueError, KeyError, TypeError, PlatformError):
        pass
    raise PlatformError(f"not a canfar platform handle: {handle!r}")


class CanfarPlatform(PlatformBase):
    name = "canfar"
    executable_kinds: ClassVar[frozenset[str]] = frozenset({JUPYTER_NOTEBOOK_KIND, DOCKER_CONTAINER_KIND})
    # Data by http(s) URL is fetched and staged in the session's ARC folder (`data/<name>`); data
    # that only a data lake holds (Rucio, SKAO, IVOA) is not staged here, so not offered.
    data_kinds: ClassVar[frozenset[str]] = frozenset({SIMPLE_DATA_KIND})

    def __init__(self, **settings: Any) -> None:
        # The registry passes every configured setting; unknown ones are ignored on purpose.
        self.settings = CanfarSettings.from_keywords(settings)
        tracer_provider: TracerProvider | None = settings.get("tracer_provider")
        transport: httpx.AsyncBaseTransport | None = settings.get("transport")
        self._client = SkahaClient(self.settings, tracer_provider=tracer_provider, transport=transport)
        self._tokens = self._client.tokens
        self._storage = ArcStorage(
            self.settings, self._tokens, tracer_provider=tracer_provider, transport=transport
        )
        # A notebook's location is a user's URL fetched with the launcher's network access: the same
        # guard as the local platform's (no internal host unless a pool allows it).
        self._fetcher = Fetcher(
            self.settings, LocationRules.of([], self.settings.allowed_hosts, []), tracer_name=TRACER_NAME
        )

    def poll_interval(self, spec: LaunchSpec) -> float:
        return self.settings.poll_s

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        return self.settings.preparation_s

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._storage.aclose()

    # -- the port -----------------------------------------------------------------------------------

    async def prepare(self, spec: LaunchSpec) -> None:
        self._check_configured()
        params = self._create_params(spec)  # every check that needs no network
        await self._client.discover()
        await self._check_resources(spec)
        await self._check_image(spec, dict(params)["image"])
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        if spec.executable_kind == JUPYTER_NOTEBOOK_KIND:
            await self._stage_notebook(spec, self._staged(spec))

    async def start(self, spec: LaunchSpec) -> str:
        self._check_configured()
        params = self._create_params(spec)
        name = dict(params)["name"]
        api = await self._client.discover()
        # A retried start (or a restarted launcher) may find the session its earlier attempt made.
        session_id = await self._find(name, api)
        if session_id is None:
            session_id = await self._create(params, name, api)
        else:
            log.info("canfar: adopting existing session %s named %s", session_id, name)
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT_FILE, STATE_FILE):
            record = read_json_object(spec.work_dir / stale)
            if record is not None and record.get("id") != session_id:
                (spec.work_dir / stale).unlink(missing_ok=True)
        log.info("canfar: session %s started as CANFAR session %s", spec.session_id, session_id)
        if spec.executable_kind == JUPYTER_NOTEBOOK_KIND:
            mode, staged = notebook_mode(spec.executable), self._staged(spec)
            return _handle(session_id, api, name, time.time(), mode, staged)
        return _handle(session_id, api, name, time.time(), None, None)

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        parsed = _parse_handle(handle)
        recorded = _read_result(spec.work_dir, parsed.id)
        if recorded is not None:
            return recorded
        response = await self._client.request(
            "GET", self._path(parsed, parsed.id), ok=(200, 404), route=self._route(parsed, "{id}")
        )
        state = read_json_object(spec.work_dir / STATE_FILE) or {"id": parsed.id}
        if response.status_code == 404:
            state["missing"] = int(state.get("missing", 0)) + 1
            write_json_atomically(spec.work_dir / STATE_FILE, state)
            if state["missing"] < MISSING_POLLS_TO_GIVE_UP:
                return _in_progress(state)
            return self._record(spec, parsed, self._vanished(parsed, state))
        info = _json_object(response)
        status = str(info.get("status") or "Unknown")
        state.update(missing=0, last_status=status)
        if status in RUNNING_STATUSES:
            state["seen_running"] = True
        connect_url = info.get("connectURL")
        if isinstance(connect_url, str) and connect_url:
            if parsed.mode is NotebookMode.INTERACTIVE and parsed.staged is not None:
                connect_url = notebook_url(connect_url, self.settings, parsed.staged)
            state["connector"] = _connector(str(info.get("type") or ""), connect_url)
        write_json_atomically(spec.work_dir / STATE_FILE, state)
        if status in SUCCEEDED_STATUSES or status in FAILED_STATUSES:
            return await self._conclude(spec, parsed, status)
        if status in RUNNING_STATUSES or state.get("seen_running"):
            # An unknown status after Running: keep polling; the booked slot bounds the run.
            return _in_progress(state)
        waited = time.time() - parsed.created
        if waited > self.settings.pending_timeout_s:
            return await self._give_up_pending(spec, parsed, status, waited)
        return _in_progress(state)

    async def cancel(self, spec: LaunchSpec, handle: str) -> None:
        parsed = _parse_handle(handle)
        if _read_result(spec.work_dir, parsed.id) is not None:
            return  # it has ended already; release deletes what is left
        # It may have just ended: then its real outcome (and logs) are kept, not a cancel.
        with contextlib.suppress(PlatformError):
            if (await self.poll(spec, handle)).state.is_final:
                return
        with contextlib.suppress(PlatformError):
            await self._fetch_logs(spec, parsed)
        await self._delete(parsed)
        message = f"the CANFAR session {parsed.id} was deleted on cancel"
        self._record(
            spec,
            parsed,
            RunStatus(state=RunState.CANCELLED, message=message, outputs=_outputs(spec.work_dir)),
        )
        log.info("canfar: cancelled session %s (CANFAR session %s)", spec.session_id, parsed.id)

    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        if handle is None:
            return
        parsed = _parse_handle(handle)
        try:
            await self._delete(parsed)
        except PlatformError as error:
            # Not raised: the run's outcome is already known, and skaha removes finished sessions
            # itself after their ttl. A live one would run until its deadline: say so loudly.
            log.warning("canfar: could not delete CANFAR session %s of session %s: %s",
                        parsed.id, spec.session_id, error.message)  # fmt: skip

    # -- steps ------------------------------------------------------------------------------------

    def _check_configured(self) -> None:
        if not self.settings.url and not self.settings.discovered:
            raise PlatformError(
                "the canfar platform has no URL: set EB_CANFAR_URL (e.g. https://ws-uv.canfar.net/skaha), "
                "or EB_CANFAR_SERVICE (its ivo:// identifier) with EB_CANFAR_REGISTRY (a resource-caps URL)"
            )
        if not self._tokens.configured:
            raise PlatformError(
                "the canfar platform has no token: set EB_CANFAR_TOKEN or EB_CANFAR_TOKEN_FILE"
            )

    def _staged(self, spec: LaunchSpec) -> StagedNotebook:
        """Where this session's notebook goes in ARC (the storage must be configured)."""
        self._check_storage("notebooks")
        location = spec.executable.get("location")
        if not isinstance(location, str) or not location:
            raise PlatformError("a JupyterNotebook executable needs a location")
        return StagedNotebook.of(self.settings, session_name(spec.session_id), notebook_file_name(location))

    def _check_storage(self, what: str) -> None:
        missing = [
            variable for variable, value in (
                ("EB_CANFAR_STORAGE_URL", self.settings.storage_url),
                ("EB_CANFAR_STORAGE_USER", self.settings.storage_user),
            ) if not value
        ]  # fmt: skip
        if missing:
            raise PlatformError(
                f"the canfar platform stages {what} in the user's ARC storage, but "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
            )

    async def prepare_data(self, spec: LaunchSpec, data: dict[str, Any]) -> None:
        """Fetch one data resource by its http(s) URL into the session's ARC folder, `data/<name>`,
        where the run finds it (a batch notebook runs in that folder: `data/<name>` from it)."""
        kind = data.get("kind")
        if not isinstance(kind, str) or normalise_kind(kind) != SIMPLE_DATA_KIND:
            raise PlatformError(f"the canfar platform stages only simple data resources, not {kind}")
        self._check_configured()
        self._check_storage("data")
        location = data.get("location")
        if not isinstance(location, str) or not location.startswith(("http://", "https://")):
            raise PlatformError(
                f"the canfar platform stages data it fetches by http(s) URL; {location!r} is not one"
            )
        folder = f"{session_folder(self.settings, session_name(spec.session_id))}/data"
        target = f"{folder}/{data_file_name(data)}"
        content = await self._fetcher.read(location, self.settings.max_data_bytes, "data")
        for parent in folders_to_make(folder):
            await self._storage.make_folder(parent)
        await self._storage.upload(target, content)
        log.info("canfar: staged data of session %s in ARC at %s", spec.session_id, target)

    def _create_params(self, spec: LaunchSpec) -> list[tuple[str, str]]:
        kind = spec.executable_kind
        executable = spec.executable
        command: list[tuple[str, str]] = []
        if kind == JUPYTER_NOTEBOOK_KIND:
            mode = notebook_mode(executable)
            staged = self._staged(spec)
            if mode is NotebookMode.BATCH:
                image = self.settings.batch_image
                variable = "EB_CANFAR_BATCH_IMAGE"
                session_type = "headless"
                command = batch_command(self.settings, staged)
            else:
                image = self.settings.notebook_image
                variable = "EB_CANFAR_NOTEBOOK_IMAGE"
                session_type = "notebook"
            if not image:
                raise PlatformError(
                    f"the canfar platform runs {mode.value} notebooks in a {session_type} session, but no "
                    f"image for them is configured ({variable})"
                )
        elif kind == DOCKER_CONTAINER_KIND:
            image = _image(executable)
            session_type = self.settings.session_type
            if executable.get("privileged"):
                raise PlatformError("the canfar platform does not run privileged containers")
            command = _command_params(executable)
        else:
            raise PlatformError(f"the canfar platform cannot run executables of kind {kind or '(none)'}")
        params = [
            ("type", session_type),
            ("name", session_name(spec.session_id)),
            ("image", image),
            ("cores", str(spec.cores)),
            ("ram", str(spec.memory_gib)),
        ]
        if session_type == "headless":
            params += command
            user_env = executable.get("environment")
            environment = (user_env if isinstance(user_env, dict) else {}) | spec.environment
            for key, value in environment.items():
                if not key or "=" in key:
                    raise PlatformError(f"{key!r} is not a valid environment variable name")
                params.append(("env", f"{key}={value}"))
        return params

    async def _check_resources(self, spec: LaunchSpec) -> None:
        response = await self._client.request(
            "GET", self._client.path("context"), route=self._route(None, "context")
        )
        try:
            context = response.json()
        except ValueError:
            return  # an unreadable context is not a reason to refuse: the create will tell
        for key, asked, unit in (
            ("cores", spec.cores, "cores"),
            ("memoryGB", spec.memory_gib, "GiB of memory"),
        ):
            block = context.get(key) if isinstance(context, dict) else None
            options = block.get("options") if isinstance(block, dict) else None
            if isinstance(options, list) and options and asked not in options:
                raise PlatformError(
                    f"CANFAR cannot give a session {asked} {unit}: it offers {_ranges(options)}"
                )

    async def _check_image(self, spec: LaunchSpec, image: str) -> None:
        wanted = _digest(spec.executable)
        if wanted is None or "@" in image:
            return
        response = await self._client.request(
            "GET", self._client.path("image"), route=self._route(None, "image")
        )
        with contextlib.suppress(ValueError):
            for entry in response.json():
                if isinstance(entry, dict) and entry.get("id") == image:
                    found = entry.get("digest")
                    if isinstance(found, str) and found and found != wanted:
                        raise PlatformError(
                            f"the image {image} on CANFAR has digest {found}, not the requested {wanted}"
                        )

    async def _create(self, params: list[tuple[str, str]], name: str, api: str) -> str:
        path = self._client.path("session", api=api)

        async def find(state: CallState) -> str | None:
            return _session_named(await self._client.look("GET", path, state, route=path), name)

        def parse(response: httpx.Response) -> str:
            session_id = response.text.strip()
            if not re.fullmatch(r"[A-Za-z0-9]+", session_id):
                raise PlatformError(f"CANFAR answered the create of {name} with no session id: "
                                    f"{first_line(response.text, 200)!r}")  # fmt: skip
            return session_id

        # A create with no answer may still be under way on the server: look for about two request
        # timeouts before sending it again.
        return await self._client.create(
            path, params, find, parse, what=f"create the CANFAR session {name}",
            settle_s=min(60.0, 2 * self.settings.timeout_s),
        )  # fmt: skip

    async def _find(self, name: str, api: str) -> str | None:
        path = self._client.path("session", api=api)
        return _session_named(await self._client.request("GET", path, route=path), name)

    async def _conclude(self, spec: LaunchSpec, parsed: CanfarHandle, status: str) -> RunStatus:
        """The session has ended: keep its logs (and events) now, before skaha removes them."""
        await self._fetch_logs(spec, parsed)
        if parsed.mode is NotebookMode.BATCH and parsed.staged is not None:
            return await self._conclude_batch(spec, parsed, parsed.staged, status)
        if status in SUCCEEDED_STATUSES:
            return self._record(spec, parsed, RunStatus(
                state=RunState.SUCCEEDED, message=f"the CANFAR session {parsed.id} completed",
                outputs=_outputs(spec.work_dir),
            ))  # fmt: skip
        events = await self._fetch_events(spec, parsed)
        reasons = _warnings(events)
        message = f"the CANFAR session {parsed.id} ended {status}"
        if reasons:
            message += ": " + "; ".join(reasons)
        tail = _log_tail(spec.work_dir / LOG_FILE)
        if tail:
            message += f"\nlast lines of its log:\n{tail}"
        return self._record(spec, parsed, RunStatus(
            state=RunState.FAILED, message=message[:MESSAGE_LIMIT], outputs=_outputs(spec.work_dir),
        ))  # fmt: skip

    async def _conclude_batch(
        self, spec: LaunchSpec, parsed: CanfarHandle, staged: StagedNotebook, status: str
    ) -> RunStatus:
        """A batch notebook is judged by its executed copy: the session's status only says whether
        the runner exited 0 (nbconvert with --allow-errors does even when a cell failed)."""
        content = await self._storage.download(staged.executed, self.settings.max_output_bytes)
        if content is not None:
            await asyncio.to_thread((spec.work_dir / EXECUTED_FILE).write_bytes, content)
        outputs = _outputs(spec.work_dir)
        if content is not None:
            outputs["notebook_arc"] = vos_uri(self.settings, staged.executed)
        executed = read_executed(content) if content is not None else None
        if executed is not None and executed.error is None and status in SUCCEEDED_STATUSES:
            message = f"the notebook ran to its end in the CANFAR session {parsed.id}"
            if executed.printed:
                message += f"; it printed (last lines):\n{executed.printed}"
            return self._record(spec, parsed, RunStatus(
                state=RunState.SUCCEEDED, message=message[:MESSAGE_LIMIT], outputs=outputs
            ))  # fmt: skip
        if executed is not None and executed.error is not None:
            message = f"the notebook failed in the CANFAR session {parsed.id}: {executed.error}"
            if executed.printed:
                message += f"\nit printed (last lines):\n{executed.printed}"
        else:
            reasons = _warnings(await self._fetch_events(spec, parsed)) if status in FAILED_STATUSES else []
            message = (
                f"the CANFAR session {parsed.id} ended {status}"
                + (": " + "; ".join(reasons) if reasons else "")
                + f", and no executed notebook was written to {vos_uri(self.settings, staged.executed)}"
            )
            tail = _log_tail(spec.work_dir / LOG_FILE)
            if tail:
                message += f"\nlast lines of its log:\n{tail}"
        return self._record(spec, parsed, RunStatus(
            state=RunState.FAILED, message=message[:MESSAGE_LIMIT], outputs=outputs | _outputs(spec.work_dir),
        ))  # fmt: skip

    async def _stage_notebook(self, spec: LaunchSpec, staged: StagedNotebook) -> None:
        """Fetch the notebook, check it is one, and put it in the session's own folder in ARC."""
        location = str(spec.executable["location"])
        content = await self._fetcher.read(location, self.settings.max_notebook_bytes, "notebook")
        try:
            await asyncio.to_thread(_check_notebook, content)
        except Exception:
            # Only what kind of problem: a parser's message may quote the content.
            raise PlatformError(
                f"{location} is not a valid Jupyter notebook (version 4, UTF-8 JSON)"
            ) from None
        for folder in staged.parents():
            await self._storage.make_folder(folder)
        await self._storage.upload(staged.notebook, content)
        log.info("canfar: staged the notebook of session %s in ARC at %s", spec.session_id, staged.notebook)

    async def _give_up_pending(
        self, spec: LaunchSpec, parsed: CanfarHandle, status: str, waited: float
    ) -> RunStatus:
        reasons: list[str] = []
        with contextlib.suppress(PlatformError):
            reasons = _warnings(await self._fetch_events(spec, parsed))
        await self._delete(parsed)
        message = (
            f"the CANFAR session {parsed.id} was still {status} after {waited:.0f} s, longer than the "
            f"pending timeout ({self.settings.pending_timeout_s:g} s, EB_CANFAR_PENDING_TIMEOUT_S)"
        )
        if reasons:
            message += ": " + "; ".join(reasons)
        message += "; the session was deleted"
        log.warning("canfar: %s", message)
        return self._record(spec, parsed, RunStatus(
            state=RunState.FAILED, message=message[:MESSAGE_LIMIT], outputs=_outputs(spec.work_dir),
        ))  # fmt: skip

    def _vanished(self, parsed: CanfarHandle, state: dict[str, Any]) -> RunStatus:
        last = state.get("last_status")
        if last in SUCCEEDED_STATUSES:
            return RunStatus(state=RunState.SUCCEEDED, message=f"the CANFAR session {parsed.id} completed")
        if last == "Terminating":
            message = f"the CANFAR session {parsed.id} was deleted outside the broker"
        elif state.get("seen_running"):
            message = (
                f"the CANFAR session {parsed.id} disappeared (HTTP 404) after it was last seen {last}; "
                "its outcome and logs are lost"
            )
        else:
            message = f"the CANFAR session {parsed.id} disappeared (HTTP 404) before it was seen running"
        return RunStatus(state=RunState.FAILED, message=message)

    async def _fetch_logs(self, spec: LaunchSpec, parsed: CanfarHandle) -> None:
        response = await self._client.request(
            "GET", self._path(parsed, parsed.id), params={"view": "logs"}, ok=(200, 404),
            route=self._route(parsed, "{id}"),
        )  # fmt: skip
        if response.status_code == 200:
            spec.work_dir.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread((spec.work_dir / LOG_FILE).write_bytes, response.content)

    async def _fetch_events(self, spec: LaunchSpec, parsed: CanfarHandle) -> str:
        response = await self._client.request(
            "GET", self._path(parsed, parsed.id), params={"view": "events"}, ok=(200, 404),
            route=self._route(parsed, "{id}"),
        )  # fmt: skip
        if response.status_code != 200:
            return ""
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread((spec.work_dir / EVENTS_FILE).write_text, response.text)
        return response.text

    async def _delete(self, parsed: CanfarHandle) -> None:
        # skaha answers 200 even for an unknown id; a 404 from a proxy means the same: nothing left.
        await self._client.request(
            "DELETE", self._path(parsed, parsed.id), ok=(200, 204, 404), route=self._route(parsed, "{id}")
        )

    def _record(self, spec: LaunchSpec, parsed: CanfarHandle, status: RunStatus) -> RunStatus:
        record = {"id": parsed.id, "status": status.model_dump(mode="json")}
        write_json_atomically(spec.work_dir / RESULT_FILE, record)
        log.info("canfar: CANFAR session %s of session %s ended %s", parsed.id, spec.session_id, status.state)
        return status

    def _path(self, parsed: CanfarHandle, session_id: str) -> str:
        return self._client.path("session", session_id, api=parsed.api)

    def _route(self, parsed: CanfarHandle | None, tail: str) -> str:
        api = parsed.api if parsed is not None else self._client.api
        return f"/{api}/session/{tail}" if tail == "{id}" else f"/{api}/{tail}"


# -- helpers ----------------------------------------------------------------------------------------


def session_name(session_id: str) -> str:
    """A skaha session name for a broker session: `eb-<id>`, [a-z0-9-], at most NAME_MAX chars."""
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", session_id.lower())).strip("-")
    name = f"eb-{cleaned}" if cleaned else "eb"
    if len(name) > NAME_MAX:
        digest = hashlib.sha1(session_id.encode()).hexdigest()[:8]
        name = f"{name[: NAME_MAX - 9].rstrip('-')}-{digest}"
    return name


def _image(executable: dict[str, Any]) -> str:
    image = executable.get("image")
    locations = image.get("locations") if isinstance(image, dict) else None
    if isinstance(locations, list) and locations and isinstance(locations[0], str) and locations[0].strip():
        return locations[0].strip()
    raise PlatformError("a DockerContainer executable needs image.locations")


def _digest(executable: dict[str, Any]) -> str | None:
    image = executable.get("image")
    digest = image.get("digest") if isinstance(image, dict) else None
    return digest if isinstance(digest, str) and digest else None


def _command_params(executable: dict[str, Any]) -> list[tuple[str, str]]:
    """Docker's entrypoint + command as skaha's `cmd` + space-separated `args`."""
    raw_command = executable.get("command")
    command = [str(part) for part in raw_command] if isinstance(raw_command, list) else []
    entrypoint = executable.get("entrypoint")
    if isinstance(entrypoint, str) and entrypoint:
        cmd, args = entrypoint, command
    elif command:
        cmd, args = command[0], command[1:]
    else:
        return []
    for arg in args:
        if not arg or re.search(r"\s", arg):
            raise PlatformError(
                f"skaha passes arguments space-separated, so the argument {arg!r} cannot be sent; "
                "wrap the command in a script inside the image"
            )
    params = [("cmd", cmd)]
    if args:
        params.append(("args", " ".join(args)))
    return params


def _connector(session_type: str, url: str) -> dict[str, str]:
    kind = "urn:jupyter-notebook" if session_type == "notebook" else f"urn:canfar-{session_type or 'session'}"
    return {"kind": kind, "protocol": "HTTPS", "location": url, "status": "AVAILABLE"}


def _in_progress(state: dict[str, Any]) -> RunStatus:
    running = state.get("last_status") in RUNNING_STATUSES or bool(state.get("seen_running"))
    connector = state.get("connector")
    return RunStatus(
        state=RunState.RUNNING if running else RunState.PREPARING,
        connectors=[connector] if running and isinstance(connector, dict) else [],
    )


def _check_notebook(content: bytes) -> None:
    notebook = nbformat.reads(  # type: ignore[no-untyped-call]  # nbformat is untyped
        content.decode("utf-8"), as_version=nbformat.NO_CONVERT
    )
    if notebook.get("nbformat") != 4:
        raise ValueError("only nbformat 4 is supported")
    nbformat.validate(notebook)


def _outputs(work_dir: Path) -> dict[str, str]:
    names = {"log": LOG_FILE, "events": EVENTS_FILE, "notebook": EXECUTED_FILE}
    return {name: str(work_dir / file) for name, file in names.items() if (work_dir / file).exists()}


def _warnings(events: str) -> list[str]:
    """`REASON: MESSAGE` of each Warning row of skaha's events table (TYPE REASON MESSAGE ...)."""
    found: list[str] = []
    for line in events.splitlines():
        columns = re.split(r"\s{2,}", line.strip())
        if len(columns) >= 3 and columns[0] == "Warning":
            item = f"{columns[1]}: {columns[2]}"
            if item not in found:
                found.append(item)
    return found[:5]


def _log_tail(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL_LINES:])[-1000:]


def _ranges(options: list[Any]) -> str:
    numbers = sorted(o for o in options if isinstance(o, int))
    if numbers and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]} to {numbers[-1]}"
    return ", ".join(str(o) for o in options)


def _session_named(response: httpx.Response, name: str) -> str | None:
    """The id of our session in skaha's list, a live one first; None when there is none."""
    try:
        sessions = response.json()
    except ValueError:
        return None
    if not isinstance(sessions, list):
        return None
    mine = [s for s in sessions if isinstance(s, dict) and s.get("name") == name.lower() and s.get("id")]
    live = [s for s in mine if s.get("status") in ("Pending", "Running")]
    chosen = live or mine
    return str(chosen[0]["id"]) if chosen else None


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise PlatformError(f"CANFAR answered with something that is not a session: "
                            f"{first_line(response.text, 200)!r}", transient=True)  # fmt: skip
    return data


def _read_result(work_dir: Path, session_id: str) -> RunStatus | None:
    record = read_json_object(work_dir / RESULT_FILE)
    if record is None or record.get("id") != session_id:
        return None
    try:
        return RunStatus.model_validate(record["status"])
    except (KeyError, ValueError):
        return None
