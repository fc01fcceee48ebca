"""Child-process program of the local platform: executes one notebook and records the result.

Run as `python -m services.launcher.platforms.local.runner --input I --output O --result R`.

It runs in its own process (group) so that the launcher can crash, restart and find the run again
from files alone: the executed notebook (written even when a cell fails, because that is how users
debug), `result.json` (written atomically, last) and `kernel.json` (the kernel's pid, so a cancel can
stop the kernel even when this runner is killed with SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# File names inside the work dir, shared with the plugin (local.py) so both sides agree.
KERNEL_FILE = "kernel.json"
CANCEL_MARKER = "cancel.requested"
CANCELLED_MESSAGE = "cancelled by request"


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Write then rename, so a reader never sees half a file (rename is atomic on POSIX)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(path: Path, state: str, message: str | None) -> None:
    write_json_atomically(
        path, {"state": state, "message": message, "finished": datetime.now(UTC).isoformat()}
    )


def proc_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def _write_kernelspec(root: Path) -> None:
    """A python3 kernelspec that runs this very interpreter.

    The installed spec may say plain `python` (resolved through PATH) or point at another env; the
    notebook must see the same interpreter and packages as the runner.
    """
    spec_dir = root / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (execution broker)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))


def _failure_message(error: BaseException, failed_cell: list[int]) -> str:
    ename = getattr(error, "ename", None)
    evalue = getattr(error, "evalue", None)
    if failed_cell and ename:
        return f"cell {failed_cell[0]} (counting from 0) failed: {ename}: {evalue}"
    return f"notebook execution failed: {type(error).__name__}: {error}"


async def _execute(nb: Any, work_dir: Path, kernel_file: Path | None, failed_cell: list[int]) -> None:
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        kernel_name="python3",
        # The kernel's cwd is the work dir, so relative paths in the notebook land next to the outputs.
        resources={"metadata": {"path": str(work_dir)}},
    )

    def on_cell_error(cell: Any, cell_index: int, execute_reply: Any) -> None:
        failed_cell.append(cell_index)

    def on_notebook_start(notebook: Any) -> None:
        # The kernel runs in its own session (jupyter_client starts it with setsid), so killing the
        # runner's process group would not reach it: record it for the plugin.
        provisioner = getattr(client.km, "provisioner", None)
        pid = getattr(provisioner, "pid", None)
        if isinstance(pid, int) and kernel_file is not None:
            write_json_atomically(kernel_file, {"pid": pid, "start_time": proc_start_time(pid)})

    client.on_cell_error = on_cell_error
    client.on_notebook_start = on_notebook_start
    await client.async_execute()


def run(input_path: Path, output_path: Path, result_path: Path, *, kernel_file: bool = True) -> int:
    import nbformat

    work_dir = result_path.parent
    nb = nbformat.read(input_path, as_version=4)  # type: ignore[no-untyped-call]  # nbformat is untyped
    failed_cell: list[int] = []
    state, message = "SUCCEEDED", None
    with tempfile.TemporaryDirectory(prefix="eb-kernelspec-") as spec_root:
        _write_kernelspec(Path(spec_root))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            [spec_root, *filter(None, [os.environ.get("JUPYTER_PATH")])]
        )
        try:
            kernel = work_dir / KERNEL_FILE if kernel_file else None
            asyncio.run(_execute(nb, work_dir, kernel, failed_cell))
        except Exception as error:
            state, message = "FAILED", _failure_message(error, failed_cell)
        finally:
            # Written in every case: the partly executed notebook shows where and why it failed.
            nbformat.write(nb, output_path)  # type: ignore[no-untyped-call]
    if (work_dir / CANCEL_MARKER).exists():
        # A cancel interrupted the kernel; whatever error that caused is not the user's failure.
        state, message = "CANCELLED", CANCELLED_MESSAGE
    print(f"runner finished: {state}{': ' + message if message else ''}", flush=True)
    write_result(result_path, state, message)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    # In a sandbox with its own pid namespace, the kernel's pid would mislead the plugin.
    parser.add_argument("--no-kernel-file", action="store_true")
    args = parser.parse_args(argv)
    try:
        return run(args.input, args.output, args.result, kernel_file=not args.no_kernel_file)
    except Exception as error:
        # Anything outside the notebook itself (unreadable input, disk full): still leave a result.
        write_result(args.result, "FAILED", f"the local runner failed: {type(error).__name__}: {error}")
        raise


if __name__ == "__main__":
    sys.exit(main())
