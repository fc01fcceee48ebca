"""Rotation of the log files `broker up` and `broker site` write (``<process>.log`` in the data dir).

Each child process writes to its file through a descriptor opened for appending by the parent, so
the file cannot be renamed under it (the child would go on writing to the renamed one): a file
past ``EB_LOG_MAX_BYTES`` is copied to ``<name>.1`` (the older ones shifted to ``.2`` … up to
``EB_LOG_BACKUPS``) and then truncated, as logrotate's ``copytruncate`` does. A line written
between the copy and the truncation can be lost; nothing else is.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path


def rotate(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it is larger than ``max_bytes``; True if it was."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{number + 1}"))
    first = path.with_name(f"{path.name}.1")
    # 0600 from the start, as the log itself: logs are the operator's alone.
    fd = os.open(first, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with path.open("rb") as source, os.fdopen(fd, "wb") as copy:
        shutil.copyfileobj(source, copy)
    with path.open("r+b") as log:
        log.truncate(0)
    return True


def rotate_all(paths: Iterable[Path], max_bytes: int, backups: int) -> list[Path]:
    """Rotate each of ``paths`` that has grown past ``max_bytes``; those that were."""
    return [path for path in paths if rotate(path, max_bytes, backups)]


def log_rotation(folder: Path, max_bytes: int, backups: int) -> Callable[[], None]:
    """The upkeep of a supervisor (`shared.ops.supervise`): rotate the ``*.log`` files of ``folder``."""

    def upkeep() -> None:
        rotate_all(sorted(folder.glob("*.log")), max_bytes, backups)

    return upkeep
