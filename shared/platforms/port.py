"""The platform port: what the launcher needs from every execution platform, and what a plugin needs
to implement it.

A plugin (this distribution ships local, canfar, dirac and jbo; another distribution may ship more)
implements `Platform` and is found through the entry-point group `execution_broker.platforms`
(`shared.platforms.registry`). The launcher owns the session lifecycle, the clock and the
persistence; a plugin only stages, starts, observes, stops and cleans up one run. Everything a
plugin needs to find a run again after a launcher restart must be inside the opaque handle string
returned by `start`.

A plugin class also declares, as class attributes, the executable kinds and the data kinds it can
run (`executable_kinds`, `data_kinds`: the kind URIs of `shared.models`). The offers service reads
them without instantiating the plugin and offers a pool only for requests its platform can run.

`contract.PlatformContract` is the test suite every plugin must pass (it needs pytest; nothing here
imports it).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.models import normalise_kind


class RunState(StrEnum):
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class LaunchSpec(BaseModel):
    """Everything a platform needs to run one session's executable."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    # The IVOA executable component as JSON: {"kind": <uri>, ...kind-specific fields}.
    executable: dict[str, Any]
    cores: int = Field(ge=1)
    memory_gib: int = Field(ge=1)
    # Aware UTC. The launcher stops the run at this time; plugins may use it for platform-side limits.
    slot_end: datetime
    # Per-session folder owned by the launcher; plugins write inputs, logs and outputs here.
    work_dir: Path
    environment: dict[str, str] = {}
    # The session's other components as IVOA JSON (kind URI + fields), for platforms that stage data
    # or mount volumes: storage resources, data resources, and the compute's volume mounts.
    storage: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []

    @property
    def executable_kind(self) -> str:
        """The executable's kind URI in its current form (compare with the `shared.models` kinds)."""
        kind = self.executable.get("kind")
        return normalise_kind(kind) if isinstance(kind, str) else ""


class RunStatus(BaseModel):
    state: RunState
    # A human reason; required for FAILED and CANCELLED so the user always learns why.
    message: str | None = None
    # name -> path or URL, e.g. {"notebook": ".../output.ipynb", "log": ".../runner.log"}.
    outputs: dict[str, str] = {}
    # e.g. {"kind": "urn:jupyter-notebook", "protocol": "HTTPS", "location": url, "status": "AVAILABLE"}.
    connectors: list[dict[str, str]] = []

    @model_validator(mode="after")
    def _reason_for_bad_endings(self) -> RunStatus:
        if self.state in (RunState.FAILED, RunState.CANCELLED) and not self.message:
            raise ValueError(f"a {self.state} run status needs a message")
        return self


class PlatformError(Exception):
    """A failure the session should report as FAILED with this message.

    `transient` marks failures worth retrying (a platform API briefly unreachable), as opposed to
    failures that will never succeed (a notebook that does not exist).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@runtime_checkable
class Platform(Protocol):
    """Every method the launcher calls on a plugin; a plugin may implement it without `PlatformBase`."""

    name: str
    # What this platform can run, by kind URI (the current forms of `shared.models`). Read from the
    # class, never from an instance: the offers service learns them without building the plugin.
    executable_kinds: ClassVar[frozenset[str]]
    data_kinds: ClassVar[frozenset[str]]
    # Optional (default False): True for a platform that runs user code on the broker's own host, so
    # that its pools run it only for the owners they allow.

    async def prepare(self, spec: LaunchSpec) -> None:
        """Stage the inputs (fetch the notebook, check the image); raise PlatformError."""
        ...

    async def start(self, spec: LaunchSpec) -> str:
        """Start the run; return an opaque handle that survives a launcher restart."""
        ...

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        """Observe the run using only the handle and the platform (never in-memory state)."""
        ...

    async def cancel(self, spec: LaunchSpec, handle: str) -> None:
        """Really stop the run; idempotent, and harmless after the run has finished."""
        ...

    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        """Free platform resources, keeping the outputs; idempotent. handle is None if never started."""
        ...

    def poll_interval(self, spec: LaunchSpec) -> float:
        """Seconds the launcher should wait between polls of this run."""
        ...

    async def prepare_storage(self, spec: LaunchSpec, storage: dict[str, Any]) -> None:
        """Create one storage resource; runs before the data that lives in it. Raise PlatformError."""
        ...

    async def prepare_data(self, spec: LaunchSpec, data: dict[str, Any]) -> None:
        """Put one data resource in place (after its storage); compute never starts before this ends."""
        ...

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        """Seconds this platform expects preparation to take, before any measurement."""
        ...

    def exited(self, spec: LaunchSpec, handle: str) -> asyncio.Future[None] | None:
        """A future the platform resolves as soon as it knows the run may have ended, so the launcher
        polls at once instead of at the next interval; the launcher cancels it when it stops
        watching, which must free whatever it holds. None when the platform cannot tell: the
        launcher then only polls. Called from the running event loop."""
        ...

    async def aclose(self) -> None:
        """Free what the instance holds (connections); the launcher calls it once, at shutdown."""
        ...


@runtime_checkable
class StartsOnce(Protocol):
    """Optional, beside `Platform`: a platform on which a start repeated after a launcher crash would
    make a second run (a batch submit) implements these two, and the launcher then starts it once.
    A plugin without them is started again after such a crash, as before."""

    def start_name(self, spec: LaunchSpec) -> str:
        """The name, derived from the session alone, under which `start` makes its run. The launcher
        commits it to its store before it calls `start`."""
        ...

    async def adopt(self, spec: LaunchSpec, name: str) -> str | None:
        """After a launcher restart that may have interrupted a `start` under `name` (committed,
        with no handle saved): the handle of the run that start made, found by its name on the
        platform, or None when there is none (the launcher then starts one). Raise PlatformError."""
        ...


class PlatformBase:
    """Defaults for the steps a platform may have nothing to do in, so a plugin implements only
    what its platform needs: no storage or data to stage, no way to see a run end except by polling
    (`exited` is None), nothing held between calls (`aclose` does nothing)."""

    async def prepare_storage(self, spec: LaunchSpec, storage: dict[str, Any]) -> None:
        return None

    async def prepare_data(self, spec: LaunchSpec, data: dict[str, Any]) -> None:
        return None

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        return 5.0

    def exited(self, spec: LaunchSpec, handle: str) -> asyncio.Future[None] | None:
        return None

    async def aclose(self) -> None:
        return None


def component_keys(component: dict[str, Any]) -> set[str]:
    """The names a request may use to refer to a component: its client name and its uuid."""
    meta = component.get("meta") or {}
    return {str(v) for v in (meta.get("name"), meta.get("uuid")) if v}
