"""The ARC storage of the fake skaha (CANFAR's VOSpace `files` and `nodes` APIs), and a headless
runner that really executes a staged notebook with nbclient, as a papermill or nbconvert image would.

Storage wire format (platform-and-bus-notes-2.md §3), mounted beside skaha under `/arc`:
  PUT  /arc/files/<path>   body = the file; parent folder must exist (404); `Digest: md5=<b64>` checked
                           (412 on a mismatch); 201 with the stored file's `Digest`
  GET  /arc/files/<path>   the bytes (application/octet-stream); 404 if none
  PUT  /arc/nodes/<path>   a vos:ContainerNode document (text/xml) whose uri ends with <path>: 201; 409
                           if the node exists; 404 if its parent does not
  GET  /arc/nodes/<path>   the node document, a folder's children in <vos:nodes>
Each user has `home/<user>`; any path outside it is 403, a `..` or empty segment 400. Authentication
is skaha's (the same bearer tokens). Error bodies are text/plain, as cadc-rest's.

The runner: a headless session whose `cmd` is `papermill` (`[--log-output] [--cwd DIR] IN OUT`) or
`jupyter` (`nbconvert --to notebook --execute [--allow-errors] [--output-dir DIR] [--output NAME] IN`)
reads IN from the storage through the session's ARC mount, executes it in a temporary folder with
nbclient (the python3 kernel of this interpreter), copies the files the notebook wrote back into the
run's folder, writes the executed notebook to OUT and ends: papermill exits 1 when a cell failed,
nbconvert with --allow-errors exits 0. Its printed output is the session's log.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

VOS_NS = "http://www.ivoa.net/xml/VOSpace/v2.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_FILE_BYTES = 64 * 2**20


def _text(body: str, status: int) -> Response:
    return PlainTextResponse(body, status_code=status)


def digest(content: bytes) -> str:
    return "md5=" + base64.b64encode(hashlib.md5(content, usedforsecurity=False).digest()).decode()


@dataclass
class ArcStore:
    """Folders and files by path relative to the storage's root (`home/alice/x.ipynb`)."""

    authority: str = "cadc.nrc.ca~arc"
    folders: set[str] = field(default_factory=lambda: {"home"})
    files: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, user: str) -> None:
        with self.lock:
            self.folders.add(f"home/{user}")

    def write(self, path: str, content: bytes) -> None:
        with self.lock:
            self.files[path] = content

    def read(self, path: str) -> bytes | None:
        with self.lock:
            return self.files.get(path)

    def below(self, folder: str) -> dict[str, bytes]:
        """Every file under `folder`, by its path relative to it."""
        prefix = folder + "/"
        with self.lock:
            return {p[len(prefix) :]: data for p, data in self.files.items() if p.startswith(prefix)}

    def children(self, folder: str) -> list[tuple[str, str]]:
        """(name, vos type) of each node directly in `folder`."""
        prefix = folder + "/"
        with self.lock:
            found = [(p[len(prefix) :], "vos:ContainerNode") for p in self.folders if p.startswith(prefix)]
            found += [(p[len(prefix) :], "vos:DataNode") for p in self.files if p.startswith(prefix)]
        return sorted((name, kind) for name, kind in found if "/" not in name)

    def node_document(self, path: str) -> str:
        kind = "vos:ContainerNode" if path in self.folders else "vos:DataNode"
        items = "".join(
            f'<vos:node uri="vos://{self.authority}/{path}/{name}" xsi:type="{child}"/>'
            for name, child in self.children(path)
        )
        nodes = f"<vos:nodes>{items}</vos:nodes>" if kind == "vos:ContainerNode" else ""
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<vos:node xmlns:vos="{VOS_NS}" xmlns:xsi="{XSI_NS}" '
            f'uri="vos://{self.authority}/{path}" xsi:type="{kind}"><vos:properties/>{nodes}</vos:node>\n'
        )


class ArcApi:
    """The storage routes; `request.state.user` is set by the fake's authentication."""

    def __init__(self, store: ArcStore) -> None:
        self.store = store

    def routes(self) -> list[Route]:
        return [
            Route("/arc/files/{path:path}", self._put_file, methods=["PUT"]),
            Route("/arc/files/{path:path}", self._get_file, methods=["GET"]),
            Route("/arc/nodes/{path:path}", self._put_node, methods=["PUT"]),
            Route("/arc/nodes/{path:path}", self._get_node, methods=["GET"]),
        ]

    def _checked(self, request: Request) -> tuple[str, Response | None]:
        path = request.path_params["path"].strip("/")
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return path, _text(f"invalid path: {path}", 400)
        home = f"home/{request.state.user}"
        if path != home and not path.startswith(home + "/"):
            return path, _text(f"permission denied: {path}", 403)
        return path, None

    def _parent_missing(self, path: str) -> Response | None:
        parent = path.rsplit("/", 1)[0]
        if parent not in self.store.folders:
            return _text(f"not found: parent container /{parent}", 404)
        return None

    async def _put_file(self, request: Request) -> Response:
        path, refusal = self._checked(request)
        if refusal is not None:
            return refusal
        if path in self.store.folders:
            return _text("not a data node", 400)
        missing = self._parent_missing(path)
        if missing is not None:
            return missing
        content = await request.body()
        if len(content) > MAX_FILE_BYTES:
            return _text("quota exceeded", 413)
        sent = request.headers.get("digest")
        if sent and sent != digest(content):
            return _text(f"digest mismatch: {sent}", 412)
        self.store.write(path, content)
        return Response(status_code=201, headers={"Digest": digest(content)})

    async def _get_file(self, request: Request) -> Response:
        path, refusal = self._checked(request)
        if refusal is not None:
            return refusal
        content = self.store.read(path)
        if content is None:
            return _text(f"not found: /{path}", 404)
        return Response(content, media_type="application/octet-stream", headers={"Digest": digest(content)})

    async def _put_node(self, request: Request) -> Response:
        path, refusal = self._checked(request)
        if refusal is not None:
            return refusal
        if "xml" not in request.headers.get("content-type", ""):
            return _text("expected a VOSpace node document (text/xml)", 400)
        try:
            node = ElementTree.fromstring(await request.body())
        except ElementTree.ParseError:
            return _text("invalid node document", 400)
        uri = node.get("uri") or ""
        kind = node.get(f"{{{XSI_NS}}}type")
        if node.tag != f"{{{VOS_NS}}}node" or kind != "vos:ContainerNode":
            return _text("only container nodes are made here", 400)
        if not uri.startswith("vos://") or uri.split("/", 3)[-1] != path:
            return _text(f"node uri {uri} does not match the path /{path}", 400)
        if path in self.store.folders or self.store.read(path) is not None:
            return _text(f"node already exists: /{path}", 409)
        missing = self._parent_missing(path)
        if missing is not None:
            return missing
        with self.store.lock:
            self.store.folders.add(path)
        return _text("", 201)

    async def _get_node(self, request: Request) -> Response:
        path, refusal = self._checked(request)
        if refusal is not None:
            return refusal
        if path not in self.store.folders and self.store.read(path) is None:
            return _text(f"not found: /{path}", 404)
        return Response(self.store.node_document(path), media_type="text/xml")


@dataclass
class RunOutcome:
    exit_code: int
    log: str


def runner_command(cmd: str | None, args: str | None) -> bool:
    """Whether a headless session's command is one the fake runner executes."""
    program = (cmd or "").rsplit("/", 1)[-1]
    words = (args or "").split(" ")
    return program == "papermill" or (program == "jupyter" and words[:1] == ["nbconvert"])


def run_notebook(store: ArcStore, arc_mount: str, cmd: str, args: str) -> RunOutcome:
    """Execute a notebook as `cmd args` would in a session whose ARC is mounted at `arc_mount`."""
    words = [w for w in args.split(" ") if w]
    program = cmd.rsplit("/", 1)[-1]
    options: dict[str, str] = {}
    flags: set[str] = set()
    positional: list[str] = []
    takes_value = {"--cwd", "--output-dir", "--output", "--to"}
    i = 1 if program == "jupyter" else 0
    while i < len(words):
        word = words[i]
        if word in takes_value and i + 1 < len(words):
            options[word] = words[i + 1]
            i += 2
            continue
        if word.startswith("--"):
            flags.add(word)
        else:
            positional.append(word)
        i += 1
    prefix = arc_mount.rstrip("/") + "/"

    def stored(path: str) -> str | None:
        return path[len(prefix) :] if path.startswith(prefix) else None

    if program == "papermill":
        if len(positional) != 2:
            return RunOutcome(2, "Usage: papermill [OPTIONS] NOTEBOOK_PATH OUTPUT_PATH\n")
        source, target = stored(positional[0]), stored(positional[1])
        workdir = stored(options.get("--cwd", "")) if "--cwd" in options else None
        fail_on_error = True
    else:
        if len(positional) != 1 or "--execute" not in flags:
            return RunOutcome(2, "nbconvert: expected --execute and one notebook\n")
        source = stored(positional[0])
        folder = options.get("--output-dir") or positional[0].rsplit("/", 1)[0]
        name = options.get("--output") or positional[0].rsplit("/", 1)[-1]
        if not name.endswith(".ipynb"):
            name += ".ipynb"
        target = stored(f"{folder}/{name}")
        workdir = stored(folder)
        fail_on_error = "--allow-errors" not in flags
    if source is None or target is None:
        return RunOutcome(1, f"FileNotFoundError: {positional} is not under {arc_mount}\n")
    content = store.read(source)
    if content is None:
        return RunOutcome(1, f"FileNotFoundError: No such file or directory: '{prefix}{source}'\n")
    return _execute(store, content, target, workdir or source.rsplit("/", 1)[0], fail_on_error)


def _execute(store: ArcStore, content: bytes, target: str, workdir: str, fail_on_error: bool) -> RunOutcome:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.reads(content.decode("utf-8"), as_version=4)  # type: ignore[no-untyped-call]
    failed: str | None = None
    with tempfile.TemporaryDirectory(prefix="fake-skaha-run-") as scratch:
        # The run's folder as the session would see it through its ARC mount: its files, below it too.
        before = store.below(workdir)
        for relative, data in before.items():
            (Path(scratch) / relative).parent.mkdir(parents=True, exist_ok=True)
            (Path(scratch) / relative).write_bytes(data)
        client = NotebookClient(notebook, kernel_name="python3", resources={"metadata": {"path": scratch}})
        try:
            client.execute()
        except CellExecutionError as error:
            failed = f"{getattr(error, 'ename', 'Error')}: {getattr(error, 'evalue', error)}"
        except Exception as error:  # a kernel that would not start: the image's problem
            failed = f"{type(error).__name__}: {error}"
        for written in Path(scratch).rglob("*"):
            relative = written.relative_to(scratch).as_posix()
            if written.is_file() and before.get(relative) != (data := written.read_bytes()):
                store.write(f"{workdir}/{relative}", data)
    store.write(target, nbformat.writes(notebook).encode())  # type: ignore[no-untyped-call]
    printed = "".join(
        "".join(output.get("text", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )
    log = printed + (f"\n---------------------------------------------------------------------------\n"
                     f"{failed}\n" if failed else "")  # fmt: skip
    return RunOutcome(1 if failed and fail_on_error else 0, log)
