"""Composition root of the launcher: loads the platform plugins and resumes unfinished runs."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

from services.launcher.driver import Drivers
from services.launcher.handlers import SERVICE, LauncherHandlers, wiring
from services.launcher.pruning import launcher_pruner
from services.launcher.store import SCHEMA
from shared.bus.backends import service_store
from shared.bus.lease import served, started
from shared.bus.retention import Retention, with_pruning
from shared.bus.runtime import ServiceRuntime
from shared.ops import contexts
from shared.platforms.registry import capabilities, load_platform
from shared.pools import PoolsConfig, served_pools
from shared.service import ServiceEntry
from shared.settings import Settings
from shared.telemetry import setup_tracing, tracer_provider


def build(settings: Settings, tracing: TracerProvider | None = None) -> tuple[ServiceRuntime, Drivers]:
    """The service ready to start; nothing connects, opens a file or starts a thread before it does.

    ``tracing`` receives its spans (by default a provider that exports nothing).
    """
    tracer = tracing or tracer_provider(settings.otel_service_prefix + SERVICE)
    # One writer: the drivers in memory drive the runs of its table (active/standby on PostgreSQL).
    store = service_store(settings, SERVICE, SCHEMA, single_writer=True)
    config = served_pools(settings)
    # One plugin instance per platform that some configured pool runs on, one consumer per pool.
    work_root = settings.work_root()
    platforms = {
        name: load_platform(name, **_on_host_settings(name, config, settings, work_root))
        for name in config.platforms()
    }
    drivers = Drivers(None, platforms, work_root)
    handlers = [LauncherHandlers(drivers, pool.name, pool.platform) for pool in config.pools]
    wired = with_pruning(
        wiring(handlers), launcher_pruner(drivers.work_root), Retention(settings.retention_days)
    )
    runtime = ServiceRuntime.configured(wired, store, tracer, settings)
    drivers.bind(runtime)
    return runtime, drivers


def _on_host_settings(name: str, config: PoolsConfig, settings: Settings, work_root: Path) -> dict[str, Any]:
    """What a platform must know of its pools (together: a platform serves all its pools): the
    internal hosts a user's http(s) location may name, for every platform that fetches one (the
    launcher fetches a notebook to stage it on CANFAR too); and for a platform that runs user code
    on this host, the local folders its pools allow and what to hide."""
    pools = [pool for pool in config.pools if pool.platform == name]
    hosts: dict[str, Any] = {"allowed_hosts": sorted({host for pool in pools for host in pool.allowed_hosts})}
    if not capabilities(name).runs_on_host:
        return hosts
    return hosts | {
        "allowed_paths": sorted({path for pool in pools for path in pool.allowed_paths}),
        "hidden_paths": _hidden_paths(settings, work_root),
    }


def _hidden_paths(settings: Settings, work_root: Path) -> list[Path]:
    """What a sandboxed run must not see: the services' files, the other runs (the default work
    root's parent holds other brokers' runs too) and the operator's saved credentials."""
    hidden = [settings.data_dir.resolve(), work_root, contexts.config_home()]
    if settings.local_work_dir is None:
        hidden.append(work_root.parent)
    return hidden


def make_private_folder(path: Path, *, private_parent: bool) -> None:
    """Make ``path`` (and its parents), 0700; refuse a folder of another user or a link.

    The default work root is ``eb-work-<uid>/<digest>`` under the shared temporary folder, where
    another user could have made ``eb-work-<uid>`` first to read or replace the sessions' files:
    then ``private_parent`` checks that one too.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in (path, path.parent) if private_parent else (path,):
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise RuntimeError(
                f"the work folder {folder} is not a folder of this user; "
                "choose another with EB_LOCAL_WORK_DIR"
            )
        if info.st_mode & 0o077:
            os.chmod(folder, 0o700)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    make_private_folder(settings.work_root(), private_parent=settings.local_work_dir is None)
    runtime, drivers = build(settings, setup_tracing(settings.otel_service_prefix + SERVICE))
    try:
        # A standby waits for the lease inside start; it raises LeaseLost if the lease goes later.
        if await started(runtime.start(), stop):
            await drivers.resume_all()
            await served(stop, runtime.store)
    finally:
        await drivers.stop()
        await runtime.stop()


#: The `execution_broker.services` entry point (pyproject.toml).
entry = ServiceEntry(SERVICE, run, lambda settings: build(settings)[0].wiring)
