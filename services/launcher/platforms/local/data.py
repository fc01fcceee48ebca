"""Storage and data staging for the local platform, and volume mounts as links in the work folder.

A local run cannot bind-mount, so a volume mounted at ``/input`` appears as ``<work_dir>/input``,
a link to the staged data; commands and notebooks run with ``work_dir`` as their working folder.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path
from typing import Any

from services.launcher.platforms.local.fetch import Fetcher
from services.launcher.platforms.local.locations import LocationRefused, LocationRules, local_path
from shared.platforms.port import LaunchSpec, PlatformError, component_keys

SIMPLE_DATA_SUFFIX = "kinds/data/simple-data-resource.yaml"
SIMPLE_STORAGE_SUFFIX = "kinds/storage/simple-storage-resource.yaml"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _folder_name(component: dict[str, Any], fallback: str) -> str:
    meta = component.get("meta") or {}
    raw = str(meta.get("name") or meta.get("uuid") or fallback)
    return _UNSAFE.sub("_", raw).strip("._") or fallback


def storage_dir(spec: LaunchSpec, storage: dict[str, Any]) -> Path:
    return spec.work_dir / "storage" / _folder_name(storage, "storage")


def data_path(spec: LaunchSpec, data: dict[str, Any]) -> Path:
    return spec.work_dir / "data" / _folder_name(data, "data")


async def prepare_storage(spec: LaunchSpec, storage: dict[str, Any]) -> None:
    kind = str(storage.get("kind", ""))
    if not kind.endswith(SIMPLE_STORAGE_SUFFIX):
        raise PlatformError(f"the local platform cannot provide storage of kind {kind}")
    path = storage_dir(spec, storage)
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
    await _mount(spec, storage, path)


async def prepare_data(
    spec: LaunchSpec, data: dict[str, Any], fetcher: Fetcher, rules: LocationRules, *, max_bytes: int
) -> None:
    kind = str(data.get("kind", ""))
    if not kind.endswith(SIMPLE_DATA_SUFFIX):
        raise PlatformError(f"the local platform cannot stage data of kind {kind}")
    location = data.get("location")
    if not isinstance(location, str) or not location:
        raise PlatformError(f"the data resource {_folder_name(data, 'data')} has no location")
    target = data_path(spec, data)
    # A resumed preparation keeps what an earlier attempt finished.
    if not target.exists():
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        if location.startswith(("http://", "https://")):
            await fetcher.save(location, partial, max_bytes, "data")
        else:
            if not location.startswith("file:") and not Path(location).is_absolute():
                raise PlatformError(f"data location {location!r} must be an absolute path or a URL")
            try:
                source = local_path(location, rules, "the data")
            except LocationRefused as refused:
                raise PlatformError(refused.message) from None
            if not source.exists():
                raise PlatformError(f"data not found at {location}")
            await asyncio.to_thread(_copy, source, partial)
        await asyncio.to_thread(os.replace, partial, target)
    await _mount(spec, data, target)


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        # Links are copied as links: following them could read files outside the allowed folder.
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, target)


async def _mount(spec: LaunchSpec, component: dict[str, Any], path: Path) -> None:
    keys = component_keys(component)
    for volume in spec.volumes:
        if str(volume.get("resource", "")) not in keys:
            continue
        mount = str(volume.get("path") or f"/volumes/{_folder_name(component, 'volume')}")
        relative = Path(mount.lstrip("/"))
        if ".." in relative.parts or not relative.parts:
            raise PlatformError(f"volume path {mount!r} must be a plain absolute path")
        link = spec.work_dir / relative
        await asyncio.to_thread(_link, link, path)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    link.symlink_to(target)
