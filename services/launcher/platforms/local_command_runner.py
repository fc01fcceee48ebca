"""Child-process wrapper of the local platform for `LocalCommand`: runs one argv, records its end.

Run as `python -I -m services.launcher.platforms.local_command_runner -- PROGRAM [ARG...]` with the
session's work dir as the current directory and stdout/stderr going to `command.log` there.

A plain command cannot write `result.json` itself, so this wrapper does it for it: it runs the argv
(no shell) in its own process group, the one the plugin started it in, waits, and writes
`{"state", "message", "finished"}` atomically, exactly like the notebook runner, so a restarted
launcher finds the outcome in the work dir. SIGTERM is forwarded to the whole group (the command and
whatever it spawned). It imports only the standard library: it must start in a few tens of ms,
because the fault-injection suite runs hundreds of sessions whose work takes no time at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

# File names inside the work dir (the current directory), shared with the plugin.
RESULT_FILE = "result.json"
COMMAND_LOG_FILE = "command.log"
# Must equal local_runner.CANCEL_MARKER / CANCELLED_MESSAGE (not imported: that module is heavy).
CANCEL_MARKER = "cancel.requested"
CANCELLED_MESSAGE = "cancelled by request"
LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 2000


def write_result(state: str, message: str) -> None:
    """Write then rename, so a reader never sees half a file (rename is atomic on POSIX)."""
    content: dict[str, Any] = {"state": state, "message": message, "finished": datetime.now(UTC).isoformat()}
    tmp = f".{RESULT_FILE}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, RESULT_FILE)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def log_tail() -> str:
    try:
        with open(COMMAND_LOG_FILE, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4 * LOG_TAIL_CHARS))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-LOG_TAIL_LINES:])[-LOG_TAIL_CHARS:]


def exit_message(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"exit code {code} (killed by {name})"


def start_failure(program: str, error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return f"command not found: {program}"
    if isinstance(error, PermissionError):
        return f"command not executable: {program} (permission denied)"
    if isinstance(error, OSError):
        return f"cannot execute {program}: {error.strerror or error}"
    return f"cannot execute {program}: {error}"


def run(argv: list[str]) -> int:
    terminating = False

    def forward(signum: int, frame: object) -> None:
        # The plugin signals the whole group already; this covers a SIGTERM sent to this process
        # alone. The wrapper ignores the copy it sends itself, and waits for the command to end.
        nonlocal terminating
        if not terminating:
            terminating = True
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(os.getpgrp(), signal.SIGTERM)

    # Before the command starts: a SIGTERM must never leave it running without us.
    signal.signal(signal.SIGTERM, forward)
    try:
        # Same process group as this wrapper, so a SIGKILL of the group cannot orphan it.
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    except (OSError, ValueError) as error:
        message = start_failure(argv[0], error)
        print(message, file=sys.stderr, flush=True)
        write_result("FAILED", message)
        return 0
    code = child.wait()
    if os.path.exists(CANCEL_MARKER):
        # A cancel stopped the command; whatever exit code that caused is not the user's failure.
        write_result("CANCELLED", CANCELLED_MESSAGE)
    elif code == 0:
        write_result("SUCCEEDED", exit_message(code))
    else:
        tail = log_tail()
        write_result("FAILED", f"{exit_message(code)}\n{tail}" if tail else exit_message(code))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m services.launcher.platforms.local_command_runner -- PROGRAM [ARG...]",
              file=sys.stderr)  # fmt: skip
        write_result("FAILED", "the local command runner was given no command")
        return 2
    try:
        return run(args)
    except Exception as error:
        # Anything outside the command itself (disk full): still leave a result.
        write_result("FAILED", f"the local command runner failed: {type(error).__name__}: {error}")
        raise


if __name__ == "__main__":
    sys.exit(main())
