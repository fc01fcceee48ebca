"""The launcher's retention: a finished run's row and its work directory go together."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime
from pathlib import Path

from services.launcher import store as tables
from shared.bus.retention import Pruner
from shared.bus.store import Transaction

log = logging.getLogger(__name__)


def work_dir_of(work_root: Path, session_id: str) -> Path | None:
    """The session's directory under ``work_root``, or None for an id that would name anything else
    (a row is data: an id such as ``..`` must never make pruning delete outside the root)."""
    if not session_id or session_id in {".", ".."} or Path(session_id).name != session_id:
        return None
    return work_root / session_id


def remove_work_dir(work_root: Path, session_id: str) -> None:
    path = work_dir_of(work_root, session_id)
    if path is None:
        log.warning("launcher: not pruning the work directory of a session id that is no plain name")
        return
    try:
        if path.is_symlink():
            path.unlink()  # never follow a link out of the root
        elif path.exists():
            shutil.rmtree(path)
    except OSError as exc:  # the row is gone; a directory left behind is logged, not fatal
        log.warning("launcher: could not remove the work directory %s: %s", path, exc)


def launcher_pruner(work_root: Path) -> Pruner:
    async def prune(tx: Transaction, cutoff: datetime, limit: int) -> int:
        ids = await tables.prune_finished(tx, cutoff, limit)
        for session_id in ids:
            # Only once the rows are gone for good: a rolled-back prune keeps its directories.
            tx.after_commit(lambda session_id=session_id: remove_work_dir(work_root, session_id))  # type: ignore[misc]
        return len(ids)

    return prune
