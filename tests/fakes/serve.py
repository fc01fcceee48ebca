"""Serve an ASGI app (a fake platform API) with uvicorn on 127.0.0.1, on a free port, in a thread.

The server runs in its own thread and event loop, so it works from sync fixtures, from async tests
(whose loop it never blocks) and for services started as separate processes (end-to-end tests).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

StartupTimeout = 10.0


def serve_asgi(app: Any, *, graceful_s: float = 1.0) -> tuple[str, Callable[[], None]]:
    """Start `app` on 127.0.0.1:<free port>; return its base URL and a function that stops it.

    `graceful_s` bounds how long stopping waits for requests still in flight (an injected hang).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(max(1, graceful_s)),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"asgi-{port}")
    thread.start()
    deadline = time.monotonic() + StartupTimeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the ASGI server on 127.0.0.1:{port} did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=graceful_s + 5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()

    return f"http://127.0.0.1:{port}", stop


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`with serving(app) as base_url:` — the same, as a context manager."""
    base_url, stop = serve_asgi(app)
    try:
        yield base_url
    finally:
        stop()
