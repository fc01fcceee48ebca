"""What the canfar platform decides about a notebook, without any I/O: where it is staged in the
user's ARC storage, how a batch session runs it, which URL opens it, and what its executed copy says.

Every ARC path is built here from checked segments (`settings.SEGMENT`: letters, digits, `.`, `_`,
`-`, never `..`, never a separator), so neither a notebook's file name nor a session id can reach
outside the session's own folder, and no path holds a space that skaha's space-split `args` would
cut in two.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from services.launcher.platforms.canfar.settings import SEGMENT, CanfarSettings
from shared.models import NotebookMode
from shared.platforms.port import PlatformError

EXECUTED_PREFIX = "executed-"
NOTEBOOK_SUFFIX = ".ipynb"
# How much of the notebook's printed output a session's last event repeats.
PRINTED_TAIL_LINES = 20
PRINTED_TAIL_CHARS = 1200


def notebook_mode(executable: dict[str, Any]) -> NotebookMode:
    """The executable's mode; absent means interactive on CANFAR (the user opens the notebook)."""
    raw = executable.get("notebook_mode")
    if raw is None:
        return NotebookMode.INTERACTIVE
    try:
        return NotebookMode(raw)
    except ValueError:
        raise PlatformError(f"notebook_mode must be interactive or batch, not {raw!r}") from None


def notebook_file_name(location: str) -> str:
    """The staged notebook's file name: the last segment of its URL's path, if it is a safe name."""
    parts = urlsplit(location)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PlatformError(
            f"the canfar platform stages a notebook it fetches by http(s) URL; {location!r} is not one"
        )
    name = unquote(parts.path.rsplit("/", 1)[-1])
    if not SEGMENT.fullmatch(name) or not name.endswith(NOTEBOOK_SUFFIX) or name.startswith(EXECUTED_PREFIX):
        raise PlatformError(
            f"the notebook's file name {name[:120]!r} (the end of its URL) cannot be staged in ARC: it must "
            f"end in {NOTEBOOK_SUFFIX}, be at most 100 characters of letters, digits, . _ - starting with a "
            f"letter or digit, and not start with {EXECUTED_PREFIX!r}"
        )
    return name


def _segment(value: str, what: str) -> str:
    if not SEGMENT.fullmatch(value) or value in (".", ".."):
        raise PlatformError(f"{what} {value[:120]!r} cannot be part of a path in ARC")
    return value


def session_folder(settings: CanfarSettings, folder_name: str) -> str:
    """The session's own folder in ARC, relative to the storage's root: where its notebook and data go."""
    user = _segment(settings.storage_user, "the CANFAR user name")
    return "/".join(["home", user, settings.storage_folder, _segment(folder_name, "the session folder")])


def folders_to_make(folder: str) -> list[str]:
    """The folders to make for `folder`, outermost first, below the user's home (which always exists)."""
    parts = folder.split("/")
    return ["/".join(parts[:i]) for i in range(3, len(parts) + 1)]


def data_file_name(data: dict[str, Any]) -> str:
    """A staged data file's name: the resource's `meta.name`, else the end of its URL; a safe name."""
    meta = data.get("meta") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        location = str(data.get("location") or "")
        name = unquote(urlsplit(location).path.rsplit("/", 1)[-1])
    return _segment(name, "the data resource's name")


@dataclass(frozen=True)
class StagedNotebook:
    """Where one session's notebook lives, as paths relative to the storage's root (no leading /)."""

    folder: str
    name: str

    @classmethod
    def of(cls, settings: CanfarSettings, folder_name: str, name: str) -> StagedNotebook:
        return cls(session_folder(settings, folder_name), _segment(name, "the notebook file name"))

    @classmethod
    def checked(cls, folder: str, name: str) -> StagedNotebook:
        """One read back from a handle: each segment checked again."""
        for part in folder.split("/"):
            _segment(part, "a folder")
        return cls(folder, _segment(name, "the notebook file name"))

    @property
    def notebook(self) -> str:
        return f"{self.folder}/{self.name}"

    @property
    def executed(self) -> str:
        return f"{self.folder}/{EXECUTED_PREFIX}{self.name}"

    def parents(self) -> list[str]:
        return folders_to_make(self.folder)


def in_session(settings: CanfarSettings, path: str) -> str:
    """The path a session sees for a storage path (ARC is mounted at `arc_mount`)."""
    return f"{settings.arc_mount}/{path}"


def vos_uri(settings: CanfarSettings, path: str) -> str:
    return f"vos://{settings.storage_authority}/{path}"


def batch_command(settings: CanfarSettings, staged: StagedNotebook) -> list[tuple[str, str]]:
    """skaha's `cmd` and `args` that execute the staged notebook into its executed copy.

    papermill writes the executed notebook even when a cell fails (and then exits 1, so the session
    ends Failed); nbconvert is told `--allow-errors` so it writes it too (the plugin judges the
    cells). Both run in the session's folder, so the notebook's relative paths land there.
    """
    folder = in_session(settings, staged.folder)
    source = in_session(settings, staged.notebook)
    if settings.batch_runner == "papermill":
        target = in_session(settings, staged.executed)
        return [("cmd", "papermill"), ("args", f"--log-output --cwd {folder} {source} {target}")]
    output = f"{EXECUTED_PREFIX}{staged.name}"
    return [
        ("cmd", "jupyter"),
        (
            "args",
            f"nbconvert --to notebook --execute --allow-errors --output-dir {folder} "
            f"--output {output} {source}",
        ),
    ]


def notebook_url(connect_url: str, settings: CanfarSettings, staged: StagedNotebook) -> str:
    """skaha's JupyterLab URL (`…/lab/tree/<home>?token=…`, root_dir `/`) made to open the notebook.

    The tree path is absolute in the container, so it is the notebook's path under the ARC mount;
    the query (the session's token) is kept.
    """
    parts = urlsplit(connect_url)
    marker = "/lab/tree/"
    base = parts.path.split(marker, 1)[0] if marker in parts.path else parts.path.rstrip("/")
    base = base.removesuffix("/lab")
    path = f"{base}{marker}{in_session(settings, staged.notebook).lstrip('/')}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


@dataclass(frozen=True)
class Executed:
    """What an executed notebook says: the first failed cell (if any) and the tail of its printing."""

    error: str | None
    printed: str


def read_executed(content: bytes) -> Executed:
    """Judge an executed notebook (nbformat 4 JSON) by its cells' outputs; never quotes more than a tail."""
    try:
        notebook = json.loads(content)
        cells = notebook["cells"]
        if not isinstance(cells, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return Executed("the executed notebook is not a readable notebook", "")
    printed: list[str] = []
    error: str | None = None
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs") or []:
            if not isinstance(output, dict):
                continue
            kind = output.get("output_type")
            if kind == "stream":
                printed.append(_text(output.get("text")))
            elif kind == "error" and error is None:
                ename, evalue = output.get("ename"), output.get("evalue")
                error = f"cell {index} (counting from 0) failed: {ename}: {evalue}"
    return Executed(error, tail("".join(printed)))


def tail(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-PRINTED_TAIL_LINES:])[-PRINTED_TAIL_CHARS:]


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return str(value or "")
