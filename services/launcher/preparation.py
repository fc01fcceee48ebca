"""The preparation graph: storage → data → compute, the executable's image in parallel.

Compute (``Platform.start``) is only called after this returns, so a run can never start before its
volumes and data are in place — the race the prototype had (a container started before its input
volume existed). Each step is called once: the HTTP calls inside it are retried by the HTTP layer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shared.platforms.port import LaunchSpec, Platform, component_keys


def _label(role: str, component: dict[str, Any], index: int) -> str:
    meta = component.get("meta") or {}
    return f"{role}:{meta.get('name') or meta.get('uuid') or index}"


async def prepare_components(platform: Platform, spec: LaunchSpec) -> dict[str, float]:
    """Run every preparation step as early as its dependencies allow; return seconds per step."""
    durations: dict[str, float] = {}

    async def timed(label: str, step: Callable[[], Awaitable[None]]) -> None:
        began = time.monotonic()
        await step()
        durations[label] = round(time.monotonic() - began, 3)

    storage_by_key: dict[str, asyncio.Task[None]] = {}
    tasks: list[asyncio.Task[None]] = []

    def storage_step(storage: dict[str, Any]) -> Callable[[], Awaitable[None]]:
        return lambda: platform.prepare_storage(spec, storage)

    for index, storage in enumerate(spec.storage):
        task = asyncio.create_task(timed(_label("storage", storage, index), storage_step(storage)))
        tasks.append(task)
        for key in component_keys(storage):
            storage_by_key[key] = task

    async def stage(data: dict[str, Any], index: int) -> None:
        storage = storage_by_key.get(str(data.get("storage") or ""))
        if storage is not None:
            await storage  # data lives in its storage: that comes first
        await timed(_label("data", data, index), lambda: platform.prepare_data(spec, data))

    tasks += [asyncio.create_task(stage(d, i)) for i, d in enumerate(spec.data)]
    tasks.append(asyncio.create_task(timed("executable", lambda: platform.prepare(spec))))
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return durations
