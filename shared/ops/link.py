"""A cable between a site and the hub that a test, or `broker faults --cut-site`, can cut: a TCP
relay on the loopback address (a real cut: the site's leaf server stays up and keeps its clients,
only the link is gone). Threads, not asyncio, so it relays whatever the caller's loop is doing."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from shared.ops.embedded import free_port


@dataclass
class Link:
    """Relays 127.0.0.1:`port` to 127.0.0.1:`target` until `cut`; `mend` lets connections through again."""

    target: int
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _open: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def mend(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and drop the ones open: the leaf sees its hub vanish."""
        with self._lock:
            listener, self._listener = self._listener, None
            dropped, self._open = self._open, []
        if listener is not None:
            listener.close()
        for sock in dropped:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                far = socket.create_connection(("127.0.0.1", self.target), 2)
            except OSError:
                near.close()
                continue
            far.settimeout(None)  # the connect timeout would otherwise end an idle link
            with self._lock:
                if self._listener is not listener:
                    near.close()
                    far.close()
                    return
                self._open += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
