"""The ``broker`` command: run the broker, submit requests, follow sessions, and a one-shot demo."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import as_file
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import nats
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared import subjects
from shared.asyncapi import installed_document
from shared.auth import owners
from shared.auth.credentials import Credentials
from shared.bus.backends import POSTGRES_SCHEMES
from shared.bus.lease import LeaseLost
from shared.bus.servers import server_urls
from shared.bus.streams import StreamLimits, ensure_streams
from shared.client import (
    BrokerClient,
    BrokerRefused,
    BrokerTimeout,
    BrokerUnavailable,
    RequestTooLarge,
    read_request_file,
    wait_for_services,
)
from shared.examples import example, examples_dir
from shared.lifecycle import Phase
from shared.logs import LogFormat, configure_logging
from shared.messages import SessionEvent, UpdateResult
from shared.models import OfferSetResponse, to_jsonable
from shared.models import schema as model_schema
from shared.ops import callout as callout_process
from shared.ops import contexts, registry_record, site, site_cli
from shared.ops.bench_floor import FloorTransport
from shared.ops.cluster import ClusterSizeError, check_size
from shared.ops.embedded import PRIVATE_UMASK, SERVICES, EmbeddedBroker, free_port, wait_for_port
from shared.ops.logfiles import log_rotation
from shared.ops.secured import SecuredBus
from shared.ops.supervise import supervise
from shared.ops.users import DEFAULT_DATA_DIR, DataDir
from shared.ops.users import app as users_app
from shared.service import installed_services, load_service
from shared.settings import DEFAULT_NATS_URL, Settings

if TYPE_CHECKING:
    from shared.ops.bench import BenchReport
    from shared.ops.faults import FaultReport

LogFormatOption = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="json, text, or auto (EB_LOG_FORMAT; default: text on a terminal, JSON otherwise)",
    ),
]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="An IVOA Execution Broker on NATS JetStream."
)
app.add_typer(users_app, name="users")
app.command("site-key")(site_cli.site_key)
app.command("site")(site_cli.site)
app.command("registry-record")(registry_record.command)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
#: The exit status of a service that lost its lease (`shared.bus.lease`): a supervisor restarts it.
LEASE_LOST_EXIT = 3

NatsUrl = Annotated[str, typer.Option("--nats-url", envvar="EB_NATS_URL", help="NATS server of the broker.")]
ClientUrl = Annotated[
    str | None,
    typer.Option(
        "--nats-url", envvar="EB_NATS_URL", help="NATS server of the broker (default: the context's)."
    ),
]
User = Annotated[str | None, typer.Option("--user", envvar="EB_NATS_USER", help="Your user name.")]
Password = Annotated[
    str | None,
    typer.Option("--password", envvar="EB_NATS_PASSWORD", help="Your password (prefer EB_NATS_PASSWORD)."),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="EB_NATS_TOKEN", help="An OIDC access token instead.")
]
Creds = Annotated[
    Path | None, typer.Option("--creds", envvar="EB_NATS_CREDS", help="A credentials file instead.")
]
ContextName = Annotated[
    str | None, typer.Option("--context", envvar="EB_CONTEXT", help="A context other than the current one.")
]


@dataclass(frozen=True)
class Login:
    url: str | None = None
    user: str | None = None
    password: str | None = None
    token: str | None = None
    context: str | None = None
    creds: Path | None = None

    def connection(self) -> contexts.Connection:
        try:
            return contexts.resolve(
                url=self.url,
                user=self.user,
                password=self.password,
                token=self.token,
                context=self.context,
                creds=self.creds,
            )
        except contexts.ContextError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None

    def client(self) -> BrokerClient:
        found = self.connection()
        return BrokerClient(found.url, found.credentials)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def default_owner() -> str:
    """The operator's user name: the login name, kept to the characters a user name may hold."""
    try:
        name = getpass.getuser()
    except Exception:
        name = "operator"
    return re.sub(r"[^A-Za-z0-9_.@+\-]", "_", name)[:64] or "operator"


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a client coroutine; turn the expected failures into one clear line and exit code 1."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except (BrokerUnavailable, BrokerRefused) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except RequestTooLarge as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (BrokerTimeout, TimeoutError) as exc:
        err.print(f"[red]error:[/red] timed out: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# -- presentation ---------------------------------------------------------------------------------


def offerset_table(offerset: OfferSetResponse) -> Table:
    meta = offerset.meta
    table = Table(title=f"Offer set {meta.uuid if meta else ''}: {offerset.result}")
    table.add_column("#")
    table.add_column("session")
    table.add_column("start")
    table.add_column("duration")
    table.add_column("cores")
    table.add_column("memory GiB")
    table.add_column("expires")
    for index, offer in enumerate(offerset.offers or []):
        available = offer.schedule.available if offer.schedule else None
        compute = offer.compute
        cores = getattr(getattr(compute, "cores", None), "min", "")
        memory = getattr(getattr(compute, "memory", None), "min", "")
        table.add_row(
            str(index),
            offer.meta.uuid if offer.meta else "",
            (available.start or "").split("/")[0] if available else "",
            available.duration or "" if available else "",
            str(cores),
            str(memory),
            offer.expires.isoformat() if offer.expires else "",
        )
    return table


def print_messages(messages: list[Any]) -> None:
    for item in messages:
        level = getattr(item, "level", "INFO")
        text = getattr(item, "message", None) or getattr(item, "template", "")
        err.print(f"  [{'red' if str(level) == 'ERROR' else 'yellow'}]{level}[/] {text}")


def print_event(event: SessionEvent, as_json: bool) -> None:
    if as_json:
        console.print_json(event.model_dump_json(exclude_none=True))
        return
    console.print(f"{event.at:%H:%M:%S} {event.session_id} [bold]{event.phase}[/bold]")
    for item in event.messages:
        # As written: a message may quote what a user's run printed, which is not rich markup.
        console.print(f"    {item.message or item.template}", markup=False, highlight=False)


def print_update(result: UpdateResult, as_json: bool = False) -> None:
    if as_json:
        console.print_json(result.model_dump_json(exclude_none=True))
    elif result.applied:
        console.print(f"{result.session_id}: {result.phase}")
    else:
        err.print(f"[red]not applied[/red] to {result.session_id}:")
        print_messages(result.messages)
    if not result.applied:
        raise typer.Exit(1)


# -- running the broker ---------------------------------------------------------------------------


@app.command()
def service(
    name: Annotated[str, typer.Argument(help="offers, scheduler or launcher")],
    nats_url: NatsUrl = DEFAULT_NATS_URL,
    log_format: LogFormatOption = None,
) -> None:
    """Run one service in the foreground until SIGTERM or Ctrl-C."""
    os.umask(PRIVATE_UMASK)  # stores, logs and keys: this process's user's alone
    if name not in SERVICES:
        err.print(f"[red]error:[/red] unknown service {name!r}; choose one of {', '.join(SERVICES)}")
        raise typer.Exit(2)
    settings = Settings(nats_url=nats_url)
    configure_logging(name, log_format or LogFormat(settings.log_format))
    # Services are found by entry point, as platforms are: the library never imports a service.
    entry = load_service(name)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await entry.run(settings, stop)

    try:
        asyncio.run(main())
    except LeaseLost as exc:
        # Not an error of this process: it stopped being the writer. Its supervisor starts it
        # again, and it waits as a standby (docs/deployment.md "Active and standby").
        logging.getLogger(__name__).error("%s: %s; exiting (restarted, it waits as a standby)", name, exc)
        raise typer.Exit(LEASE_LOST_EXIT) from None
    except OSError as exc:
        err.print(f"[red]error:[/red] {name} could not start: {exc}")
        raise typer.Exit(1) from None


@app.command("bus-config")
def bus_config() -> None:
    """Write the secured bus of the installation in EB_DATA_DIR: its keys (made once) and the
    nats-server configuration for the installed services and pools (written anew)."""
    settings = Settings()
    bus = SecuredBus(settings.data_dir.resolve())
    try:
        wirings = {name: entry.wiring(settings) for name, entry in installed_services().items()}
    except Exception as exc:
        err.print(f"[red]error:[/red] the services cannot be built with these settings: {exc}")
        raise typer.Exit(1) from None
    try:
        console.print(str(site.write_bus_config(bus, wirings, settings)))
    except site.SiteError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def streams(nats_url: NatsUrl = DEFAULT_NATS_URL) -> None:
    """Create or update the broker's streams as the operator of the installation in EB_DATA_DIR
    (its key: <data dir>/bus/operator.nk); the services, with least privilege, only check them."""
    settings = Settings()
    bus = SecuredBus(settings.data_dir.resolve())
    operator = Credentials(nkey_seed_file=bus.operator_seed_file)

    async def main() -> None:
        try:
            nc = await nats.connect(
                server_urls(nats_url), allow_reconnect=False, **operator.connect_options()
            )
        except Exception as exc:
            raise BrokerUnavailable(nats_url, str(exc) or type(exc).__name__) from None
        try:
            await ensure_streams(nc.jetstream(), StreamLimits.of(settings))
        finally:
            await nc.close()

    run_async(main)
    console.print(f"streams ready on {nats_url}")


@app.command(hidden=True)
def callout(nats_url: NatsUrl = DEFAULT_NATS_URL, log_format: LogFormatOption = None) -> None:
    """Run the auth callout of the installation in EB_DATA_DIR in the foreground."""
    os.umask(PRIVATE_UMASK)  # stores, logs and keys: this process's user's alone
    settings = Settings(nats_url=nats_url)
    configure_logging("callout", log_format or LogFormat(settings.log_format))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await callout_process.run(settings, stop)

    try:
        asyncio.run(main())
    except (OSError, ValueError) as exc:
        err.print(f"[red]error:[/red] the auth callout could not start: {exc}")
        raise typer.Exit(1) from None


def operator_pool_env(operator: str) -> dict[str, str]:
    """The built-in pool's access for the operator, unless the environment already says otherwise.

    The local pool runs code on this host, so only the operator may use it (others: `EB_POOL_ALLOWED_OWNERS`),
    with notebooks and data from the shipped examples and the folder `broker up` was started in.
    """
    env: dict[str, str] = {}
    if "EB_POOL_ALLOWED_OWNERS" not in os.environ:
        env["EB_POOL_ALLOWED_OWNERS"] = str(owners.local(operator))
    if "EB_POOL_ALLOWED_PATHS" not in os.environ:
        env["EB_POOL_ALLOWED_PATHS"] = ",".join([str(examples_dir()), str(Path.cwd())])
    return env


def start_embedded(
    data_dir: Path,
    nats_url: str | None,
    nats_port: int,
    http_port: int | None = None,
    cluster: int = 1,
    leafnode_port: int | None = None,
) -> EmbeddedBroker:
    if cluster > 1:  # creating the streams waits out the new cluster's first election: expected
        logging.getLogger("stamina").setLevel(logging.ERROR)
    broker = EmbeddedBroker(
        data_dir=data_dir,
        nats_url=nats_url,
        nats_port=nats_port,
        http_port=http_port,
        env=operator_pool_env(default_owner()),
        cluster=cluster,
        leafnode_port=leafnode_port,
    )
    try:
        broker.start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        broker.stop()
        hint = "; choose another with --nats-port" if nats_port else ""
        err.print(f"[red]error:[/red] could not start nats-server: {exc}{hint}")
        raise typer.Exit(1) from None
    try:
        run_async(lambda: wait_for_services(broker.url, SERVICES, timeout=60, credentials=broker.operator()))
    except typer.Exit:
        broker.stop()
        for name in SERVICES:
            log = data_dir / f"{name}.log"
            if log.exists():
                err.print(f"--- last lines of {log}:")
                err.print("\n".join(log.read_text(errors="replace").splitlines()[-10:]))
        raise
    if http_port is not None:
        try:
            wait_for_port(http_port, 30)
        except TimeoutError:
            log = data_dir / "offers.log"
            err.print(f"[yellow]the HTTP API on port {http_port} did not start; see {log}")
    return broker


@app.command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    nats_port: Annotated[int, typer.Option("--nats-port", help="Port of the embedded nats-server.")] = 4222,
    nats_url: Annotated[
        str | None, typer.Option("--nats-url", help="Use this NATS server instead of starting one.")
    ] = None,
    http_port: Annotated[
        int, typer.Option("--http-port", help="Port of the HTTP API and dashboard (0: no HTTP).")
    ] = 8082,
    context: Annotated[
        str, typer.Option("--context", help="The name of the context written for you, the operator.")
    ] = contexts.DEFAULT_CONTEXT,
    cluster: Annotated[
        int,
        typer.Option(
            "--cluster",
            help="Nodes of a JetStream cluster on loopback (3, 5 or 7; ports from --nats-port up), "
            "streams with as many replicas. 1: one nats-server.",
        ),
    ] = 1,
    leafnode_port: Annotated[
        int | None,
        typer.Option(
            "--leafnode-port",
            help="Listen for sites' leaf nodes here (broker site-key admits them); "
            "with --cluster, node i listens on this port + i.",
        ),
    ] = None,
) -> None:
    """Start nats-server (JetStream), its auth callout and the three services; Ctrl-C or SIGTERM
    stops everything. You become the broker's operator: an admin identity named after your login,
    with a fresh password in a context that client commands use unless told otherwise."""
    os.umask(PRIVATE_UMASK)  # stores, logs and keys: this process's user's alone
    try:
        check_size(cluster)
    except ClusterSizeError as exc:
        usage_error(str(exc))
    if cluster > 1 and nats_url:
        usage_error("--cluster starts the nodes itself: leave out --nats-url")
    broker = start_embedded(
        data_dir.resolve(), nats_url, nats_port, http_port or None, cluster, leafnode_port
    )
    console.print(f"broker up: NATS at [bold]{broker.url}[/bold], data in {data_dir.resolve()}")
    if broker.leafnode_urls:
        console.print(f"  sites connect to: {','.join(broker.leafnode_urls)} (broker site --hub …)")
    if broker.nats is not None:
        operator = default_owner()
        credentials = broker.login(operator, admin=True)
        path = contexts.save(
            context, broker.url, credentials, description=f"broker up in {data_dir.resolve()}"
        )
        console.print(f"  you are [bold]{operator}[/bold] (an admin); your context {context!r} is {path}")
        console.print(
            "  broker submit/watch/accept use it from any terminal (--context or EB_CONTEXT: another)"
        )
        console.print(f"  other users: broker users add NAME --data-dir {data_dir}")
        if "EB_POOLS" not in os.environ:
            variable = "EB_POOL_ALLOWED_OWNERS"
            allowed = broker.env.get(variable) or os.environ.get(variable) or "nobody"
            console.print(f"  the local pool runs code on this machine only for: {allowed} ({variable})")
    if broker.http_url:
        console.print(f"  dashboard and HTTP API: [bold]{broker.http_url}/[/bold] (OpenAPI at /openapi.json)")
    settings = Settings()
    rotation = log_rotation(broker.data_dir, settings.log_max_bytes, settings.log_backups)
    supervise(
        broker.dead_services, lambda name: broker.process(name).start(), broker.stop, console, err, rotation
    )


# -- client commands ------------------------------------------------------------------------------


@app.command()
def submit(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="ExecutionRequest, YAML or JSON.")
    ],
    accept: Annotated[str | None, typer.Option("--accept", help="Accept 'first' or offer N.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the accepted session to its end.")] = False,
    as_json: JsonFlag = False,
    nats_url: ClientUrl = None,
    user: User = None,
    password: Password = None,
    token: Token = None,
    creds: Creds = None,
    context: ContextName = None,
) -> None:
    """Publish a request and print the offer set."""
    login = Login(nats_url, user, password, token, context, creds)
    try:
        document = read_request_file(file)
    except Exception as exc:
        err.print(f"[red]error:[/red] cannot read {file}: {exc}")
        raise typer.Exit(2) from None

    async def main() -> int:
        async with login.client() as client:
            offerset = await client.submit(document)
            if as_json:
                console.print_json(json.dumps(to_jsonable(offerset)))
            else:
                console.print(offerset_table(offerset))
                print_messages((offerset.meta.messages or []) if offerset.meta else [])
            if offerset.result != "YES":
                return 1
            if accept is None:
                return 0
            offers = offerset.offers or []
            index = 0 if accept == "first" else int(accept)
            if not 0 <= index < len(offers):
                err.print(f"[red]error:[/red] there is no offer {accept}")
                return 2
            chosen_meta = offers[index].meta
            session_id = chosen_meta.uuid if chosen_meta else None
            assert session_id is not None
            result = await client.accept(session_id)
            if not as_json:
                console.print(f"accepted {session_id}: {result.phase}")
            if not result.applied:
                print_messages(result.messages)
                return 1
            if watch:
                final = None
                async for event in client.events(session_id, until_done=True):
                    print_event(event, as_json)
                    final = event.phase
                return 0 if final == Phase.COMPLETED.value else 1
            return 0

    code = run_async(main)
    raise typer.Exit(code)


def _update(session_id: str, phase: Phase, login: Login, as_json: bool) -> None:
    client = login.client()

    async def main() -> UpdateResult:
        async with client:
            return await client.update(session_id, phase)

    print_update(run_async(main), as_json)


@app.command("accept")
def accept_cmd(
    session_id: str,
    nats_url: ClientUrl = None,
    user: User = None,
    password: Password = None,
    token: Token = None,
    creds: Creds = None,
    context: ContextName = None,
    as_json: JsonFlag = False,
) -> None:
    """Accept an offered session (its siblings are rejected)."""
    _update(session_id, Phase.ACCEPTED, Login(nats_url, user, password, token, context, creds), as_json)


@app.command()
def reject(
    session_id: str,
    nats_url: ClientUrl = None,
    user: User = None,
    password: Password = None,
    token: Token = None,
    creds: Creds = None,
    context: ContextName = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject an offered session."""
    _update(session_id, Phase.REJECTED, Login(nats_url, user, password, token, context, creds), as_json)


@app.command()
def cancel(
    session_id: str,
    nats_url: ClientUrl = None,
    user: User = None,
    password: Password = None,
    token: Token = None,
    creds: Creds = None,
    context: ContextName = None,
    as_json: JsonFlag = False,
) -> None:
    """Cancel a session; a running one is really stopped."""
    _update(session_id, Phase.CANCELLED, Login(nats_url, user, password, token, context, creds), as_json)


@app.command()
def watch(
    session_id: Annotated[str | None, typer.Argument(help="One session; all sessions when omitted.")] = None,
    until_done: Annotated[bool, typer.Option("--until-done", help="Stop at the session's end.")] = False,
    as_json: JsonFlag = False,
    nats_url: ClientUrl = None,
    user: User = None,
    password: Password = None,
    token: Token = None,
    creds: Creds = None,
    context: ContextName = None,
) -> None:
    """Print your session events as they happen (a session's whole history first)."""
    client = Login(nats_url, user, password, token, context, creds).client()

    async def main() -> None:
        async with client:
            async for event in client.events(
                session_id, until_done=until_done, replay=session_id is not None
            ):
                print_event(event, as_json)

    run_async(main)


# -- the demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    request_file: Annotated[
        Path | None, typer.Option("--request", help="The request to run (default: the shipped example).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 180.0,
    http_port: Annotated[
        int | None, typer.Option("--http-port", help="Port of the dashboard (default: a free port).")
    ] = None,
) -> None:
    """Start everything on a temporary data dir, run the example notebook to COMPLETED, stop."""
    data_dir = Path(tempfile.mkdtemp(prefix="broker-demo-"))
    console.rule("[bold]Execution broker demo")
    console.print(
        f"1. starting nats-server (JetStream) and the offers, scheduler and launcher services in {data_dir}"
    )
    broker = start_embedded(data_dir, None, 0, http_port or free_port())
    code = 1
    try:
        console.print(f"   NATS at {broker.url}; services ready")
        console.print(f"   dashboard and HTTP API at {broker.http_url}/")
        with contextlib.ExitStack() as files:
            # The shipped example is package data: as_file gives it a real path even from a wheel.
            request = request_file or files.enter_context(as_file(example("hello-notebook.yaml")))
            credentials = broker.login(default_owner())
            code = run_async(lambda: _demo_flow(broker.url, credentials, request, timeout))
    finally:
        console.print("5. stopping the services and nats-server")
        broker.stop()
    if code == 0:
        console.rule("[green]demo finished: COMPLETED")
    else:
        console.rule("[red]demo failed")
        for name in SERVICES:
            err.print(f"see {data_dir / (name + '.log')}")
    raise typer.Exit(code)


async def _demo_flow(url: str, credentials: Credentials, request_file: Path, timeout: float) -> int:
    document = read_request_file(request_file)
    async with BrokerClient(url, credentials) as client:
        console.print(f"2. submitting {request_file.name}")
        offerset = await client.submit(document)
        console.print(offerset_table(offerset))
        if offerset.result != "YES" or not offerset.offers:
            print_messages(offerset.meta.messages or [] if offerset.meta else [])
            return 1
        session_id = offerset.offers[0].meta.uuid if offerset.offers[0].meta else None
        assert session_id is not None
        console.print(f"3. accepting the first offer: {session_id}")
        result = await client.accept(session_id)
        if not result.applied:
            print_messages(result.messages)
            return 1
        console.print("4. following the session")
        final: SessionEvent | None = None
        started = time.monotonic()

        async def follow() -> None:
            nonlocal final
            async for event in client.events(session_id, until_done=True):
                console.print(f"   {time.monotonic() - started:5.1f} s  [bold]{event.phase}[/bold]")
                for item in event.messages:
                    console.print(f"            {item.message or item.template}")
                final = event

        await asyncio.wait_for(follow(), timeout)
        if final is None or final.phase != Phase.COMPLETED.value:
            return 1
        notebook = final.outputs.get("notebook")
        console.print(f"   executed notebook: [bold]{notebook}[/bold]")
        if notebook:
            console.print("   (open it with Jupyter to see the outputs of every cell)")
        return 0


@app.command()
def faults(
    sessions: Annotated[int, typer.Option("--sessions", min=1, help="Sessions to run.")] = 300,
    kills: Annotated[int, typer.Option("--kills", min=0, help="Services to SIGKILL and restart.")] = 6,
    restart_nats: Annotated[
        bool, typer.Option("--restart-nats", help="Also SIGKILL and restart nats-server once.")
    ] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed of the kill plan.")] = None,
    durability: Annotated[
        str, typer.Option("--durability", help="fast or safe: the broker's EB_DURABILITY for the run.")
    ] = "fast",
    cluster: Annotated[
        int, typer.Option("--cluster", help="Run the broker on a JetStream cluster of this many nodes.")
    ] = 1,
    kill_nats_node: Annotated[
        bool,
        typer.Option("--kill-nats-node", help="With --cluster: SIGKILL a stream leader's node, restart it."),
    ] = False,
    stop_nats_node: Annotated[
        bool,
        typer.Option("--stop-nats-node", help="With --cluster: SIGKILL a stream leader's node for good."),
    ] = False,
    cut_site: Annotated[
        bool,
        typer.Option(
            "--cut-site", help="A hub and one site over a leaf link, the link cut while sessions run."
        ),
    ] = False,
    cut_seconds: Annotated[
        float, typer.Option("--cut-seconds", min=1.0, max=600.0, help="With --cut-site: how long it is cut.")
    ] = 30.0,
    kill_active: Annotated[
        bool,
        typer.Option(
            "--kill-active",
            help="On PostgreSQL (EB_DATABASE_URL, an empty database): run the scheduler and the launcher "
            "as active and standby, SIGKILL the active ones (--kills times) and restart them.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run sessions through a fresh embedded broker while killing services; audit exactly-once."""
    if durability not in ("fast", "safe"):
        err.print(f"[red]error:[/red] --durability is fast or safe, not {durability!r}")
        raise typer.Exit(2)
    from shared.ops.faults import NodeFault, run_faults
    from shared.ops.takeover import DatabaseNotEmpty

    # The harness's own publishes ride out elections and restarts by design: its retries are counted
    # in the report (longest_wait_s), not worth a warning line each.
    logging.getLogger("stamina").setLevel(logging.ERROR)

    try:
        check_size(cluster)
    except ClusterSizeError as exc:
        usage_error(str(exc))
    if kill_nats_node and stop_nats_node:
        usage_error("choose one of --kill-nats-node and --stop-nats-node")
    node_fault = NodeFault.KILL if kill_nats_node else NodeFault.STOP if stop_nats_node else None
    if node_fault is not None and cluster == 1:
        usage_error(f"--{node_fault.value}-nats-node needs a cluster: add --cluster 3")
    if restart_nats and cluster > 1:
        usage_error("--restart-nats restarts the single nats-server; on a cluster use --kill-nats-node")
    if cut_site and (restart_nats or node_fault is not None or kill_active):
        usage_error("--cut-site is a fault of its own: leave out the other faults")
    database = Settings().database_url
    database_url = database.get_secret_value() if database is not None else None
    if kill_active and database_url is None:
        usage_error(
            "--kill-active needs PostgreSQL, where a standby shares the active's state: set "
            "EB_DATABASE_URL to an empty database (postgresql://user:password@host:port/database)"
        )
    if database_url is not None and not database_url.startswith(POSTGRES_SCHEMES):
        usage_error("EB_DATABASE_URL must be a postgresql:// URL")

    data_dir = Path(tempfile.mkdtemp(prefix="broker-faults-"))

    def progress(line: str) -> None:
        if not as_json:
            err.print(line)

    if cut_site:
        from shared.ops.faults_site import run_cut_site

        report = asyncio.run(
            run_cut_site(
                data_dir, sessions, kills, cluster=cluster, cut_s=cut_seconds, seed=seed, progress=progress
            )
        )
    else:
        try:
            report = asyncio.run(
                run_faults(
                    data_dir,
                    sessions,
                    kills,
                    restart_nats=restart_nats,
                    seed=seed,
                    durability=durability,
                    cluster=cluster,
                    node_fault=node_fault,
                    kill_active=kill_active,
                    database_url=database_url,
                    progress=progress,
                )
            )
        except DatabaseNotEmpty as exc:
            usage_error(str(exc))
    if as_json:
        console.print_json(json.dumps(report.summary()))
    else:
        print_fault_report(report, sessions, kills)
    raise typer.Exit(0 if report.ok else 1)


def print_fault_report(report: FaultReport, sessions: int, kills: int) -> None:
    for line in report.kill_log:
        err.print(f"  {line}")
    table = Table(title=f"faults: {sessions} sessions, {kills} kills")
    for key, value in report.summary().items():
        if key != "problems":
            table.add_row(key, str(value))
    console.print(table)
    for problem in report.problems[:20]:
        err.print(f"  [yellow]{problem}[/yellow]")


@app.command()
def pools(
    as_json: JsonFlag = False,
    nats_url: ClientUrl = None,
    user: User = None,
    password: Password = None,
    token: Token = None,
    creds: Creds = None,
    context: ContextName = None,
) -> None:
    """The scheduler's pools: platform, site, capacity, limits, and what is held and booked now."""
    client = Login(nats_url, user, password, token, context, creds).client()

    async def main() -> list[dict[str, Any]]:
        async with client:
            try:
                reply = await client.nc.request(subjects.pools_info(), b"", timeout=5)
            except Exception as exc:
                raise BrokerUnavailable(client.nats_url, f"the scheduler does not answer: {exc}") from None
            return list(json.loads(reply.data))

    report = run_async(main)
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table(title="Pools")
    for column in (
        "pool",
        "platform",
        "site",
        "cores",
        "memory GiB",
        "storage GiB",
        "grid",
        "holds",
        "bookings",
        "cores in use",
        "peak cores",
    ):
        table.add_column(column)
    for pool in report:
        use = pool["use"]
        table.add_row(
            pool["name"],
            pool["platform"],
            pool["site"],
            str(pool["cores"]),
            str(pool["memory_gib"]),
            str(pool["storage_gib"]),
            f"{pool['grid_s']} s",
            str(use["holds"]),
            str(use["bookings"]),
            str(use["cores_now"]),
            str(use["peak_cores"]),
        )
    console.print(table)


@app.command("asyncapi")
def asyncapi_cmd(
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print YAML instead of JSON.")] = False,
) -> None:
    """The bus contract (AsyncAPI 3.0.0) of the services as EB_* configures them (built, not started)."""
    try:
        document = installed_document(Settings())
    except (ValueError, LookupError, TypeError, OSError) as exc:
        err.print(f"[red]error:[/red] could not describe the services: {exc}")
        raise typer.Exit(1) from None
    if as_yaml:
        typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)
    else:
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@app.command("schema")
def schema_cmd(
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="One component: its name (DockerContainer, SimpleComputeResource, executable, "
            "MessageItem …) or kind URI. Default: the whole request document.",
        ),
    ] = None,
) -> None:
    """The JSON Schema (draft 2020-12) of the data model, for other services to reuse (docs/models.md)."""
    try:
        document = model_schema.json_schema(kind)
    except model_schema.UnknownComponent as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


@app.command()
def bench(
    scenario: Annotated[str, typer.Option("--scenario", help="offers, lifecycle or overbooking")] = "offers",
    requests: Annotated[int, typer.Option("--requests", min=1)] = 1000,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 50,
    baseline: Annotated[bool, typer.Option("--baseline", help="Also measure the transport floor.")] = False,
    floor_transport: Annotated[
        FloorTransport,
        typer.Option(
            "--floor-transport",
            help="With --baseline: the floor's relays in plain nats-py, or as faststream apps (bench extra).",
        ),
    ] = FloorTransport.NATS_PY,
    sweep: Annotated[
        str | None,
        typer.Option("--sweep", help="Concurrencies such as 10,50,200,1000: one offers run per value."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="With --sweep: a PNG of throughput and p99 against concurrency."),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="Write py-spy profiles of offers and scheduler here."),
    ] = None,
    pool_cores: Annotated[
        int | None,
        typer.Option(
            "--pool-cores",
            min=1,
            help="Cores of the pool (4 GiB each); default 64 for offers, enough for all for lifecycle.",
        ),
    ] = None,
    keep_data: Annotated[
        bool, typer.Option("--keep-data", help="Keep the run's stores and streams (printed at the end).")
    ] = False,
    offers_replicas: Annotated[
        int,
        typer.Option(
            "--offers-replicas",
            min=1,
            max=8,
            help="Overbooking scenario: this many offers processes on the PostgreSQL of EB_DATABASE_URL.",
        ),
    ] = 1,
    cluster: Annotated[
        int,
        typer.Option("--cluster", help="Offers or lifecycle on a JetStream cluster of this many nodes."),
    ] = 1,
    as_json: JsonFlag = False,
) -> None:
    """Measure a fresh embedded broker (and the plain NATS chain with --baseline)."""
    database_url = os.environ.get("EB_DATABASE_URL") or None
    if offers_replicas > 1 and scenario != "overbooking":
        usage_error("--offers-replicas runs the overbooking scenario: add --scenario overbooking")
    if offers_replicas > 1 and database_url is None:
        usage_error(
            "--offers-replicas needs the replicas' shared store: set EB_DATABASE_URL to a PostgreSQL URL"
        )
    if cluster != 1:
        try:
            check_size(cluster)
        except ClusterSizeError as error:
            usage_error(str(error))
        if scenario == "overbooking" or sweep is not None or baseline:
            usage_error("--cluster measures one offers or lifecycle run: no --sweep, --baseline, overbooking")
    if plot is not None and sweep is None:
        usage_error("--plot draws a sweep: add --sweep, e.g. --sweep 10,50,200,1000")
    if floor_transport is not FloorTransport.NATS_PY and not baseline:
        usage_error("--floor-transport chooses the relays of the floor: add --baseline")
    require_bench_extra(plot, profile, floor_transport)
    data_dir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    try:
        run_bench_command(
            data_dir,
            scenario,
            requests,
            concurrency,
            baseline,
            sweep,
            plot,
            profile,
            pool_cores,
            as_json,
            floor_transport,
            database_url,
            offers_replicas,
            cluster,
        )
    finally:
        # A 20,000-request run leaves hundreds of MB of streams and SQLite behind.
        if keep_data:
            err.print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def run_bench_command(
    data_dir: Path,
    scenario: str,
    requests: int,
    concurrency: int,
    baseline: bool,
    sweep: str | None,
    plot: Path | None,
    profile: Path | None,
    pool_cores: int | None,
    as_json: bool,
    floor_transport: FloorTransport = FloorTransport.NATS_PY,
    database_url: str | None = None,
    offers_replicas: int = 1,
    cluster: int = 1,
) -> NoReturn:
    from shared.ops.bench import parse_concurrencies, run_bench, run_overbooking, summary_rows

    if scenario == "overbooking":
        if sweep is not None or profile is not None:
            usage_error("--sweep and --profile measure the offers or lifecycle scenario, not overbooking")
        result = asyncio.run(
            run_overbooking(
                data_dir, requests, concurrency, database_url=database_url, offers_replicas=offers_replicas
            )
        )
        if as_json:
            console.print_json(json.dumps(result))
        else:
            table = Table(title="overbooking: every offer accepted at once")
            for key, value in result.items():
                table.add_row(key, str(value))
            console.print(table)
        clean = result["overbooked"] == 0 and result["lost"] == 0 and not result["stored_twice"]
        raise typer.Exit(0 if clean else 1)
    if scenario not in ("offers", "lifecycle"):
        usage_error(f"unknown scenario {scenario!r}; choose offers, lifecycle or overbooking")
    profile_dir = profile.resolve() if profile is not None else None
    if sweep is not None:
        if scenario != "offers":
            usage_error("--sweep measures the offers scenario only")
        try:
            concurrencies = parse_concurrencies(sweep)
        except ValueError as error:
            usage_error(f"--sweep: {error}")
        bench_sweep(
            data_dir,
            requests,
            concurrencies,
            baseline,
            plot,
            profile_dir,
            as_json,
            pool_cores,
            floor_transport,
        )
    report = asyncio.run(
        run_bench(
            data_dir,
            scenario,
            requests,
            concurrency,
            baseline,
            profile_dir,
            pool_cores,
            floor_transport,
            cluster=cluster,
            database_url=database_url,
        )
    )
    if as_json:
        console.print_json(json.dumps(report.as_dict()))
    else:
        table = Table(title=f"bench: {scenario}")
        for key, value in summary_rows(report):
            table.add_row(key, value)
        console.print(table)
        print_profile(report)
    raise typer.Exit(0 if report.overbooked == 0 and report.lost == 0 else 1)


def require_bench_extra(
    plot: Path | None, profile: Path | None, floor_transport: FloorTransport = FloorTransport.NATS_PY
) -> None:
    """``--plot``, ``--profile`` and ``--floor-transport faststream`` need the ``bench`` extra: say so
    before a run of minutes, not after (a relay that cannot start would leave every request lost)."""
    from shared.ops.bench_floor import FASTSTREAM_MISSING, faststream_installed
    from shared.ops.bench_plot import matplotlib_installed
    from shared.ops.bench_profile import BENCH_EXTRA, py_spy_binary

    if plot is not None and not matplotlib_installed():
        usage_error(f"--plot needs matplotlib, from the bench extra: {BENCH_EXTRA}")
    if profile is not None and py_spy_binary() is None:
        usage_error(f"--profile needs py-spy, from the bench extra: {BENCH_EXTRA}")
    if floor_transport.needs_faststream and not faststream_installed():
        usage_error(f"{FASTSTREAM_MISSING.format(floor_transport.value)}: {BENCH_EXTRA}")


def usage_error(message: str) -> NoReturn:
    # Escaped: a message holds user input and package extras (`[bench]`), not rich markup.
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def bench_sweep(
    data_dir: Path,
    requests: int,
    concurrencies: list[int],
    baseline: bool,
    plot: Path | None,
    profile_dir: Path | None,
    as_json: bool,
    pool_cores: int | None = None,
    floor_transport: FloorTransport = FloorTransport.NATS_PY,
) -> NoReturn:
    """`bench --sweep`: one offers run per concurrency, a table (or a JSON list), and the plot."""
    from shared.ops.bench import SWEEP_COLUMNS, run_sweep, sweep_point, sweep_rows

    reports = asyncio.run(
        run_sweep(data_dir, requests, concurrencies, baseline, profile_dir, pool_cores, floor_transport)
    )
    if plot is not None:
        from shared.ops.bench_plot import draw

        title = (
            f"broker bench, offers scenario, {requests} requests per point — "
            f"{datetime.now().date().isoformat()}, {os.cpu_count()} cores"
        )
        draw([sweep_point(report) for report in reports], plot, title)
    if as_json:
        console.print_json(json.dumps([report.as_dict() for report in reports]))
    else:
        relays = f", floor relays: {floor_transport.value}" if baseline else ""
        table = Table(title=f"bench sweep: offers, {requests} requests per concurrency{relays}")
        for column in SWEEP_COLUMNS:
            table.add_column(column, justify="right")
        for row in sweep_rows(reports):
            table.add_row(*row)
        console.print(table)
        for report in reports:
            print_profile(report)
        if plot is not None:
            console.print(f"plot: {plot}")
    healthy = all(report.overbooked == 0 and report.lost == 0 for report in reports)
    raise typer.Exit(0 if healthy else 1)


def print_profile(report: BenchReport) -> None:
    """The py-spy summary of a bench report, one table per profiled service."""
    if report.profile_error:
        err.print(f"[yellow]profile:[/yellow] {escape(report.profile_error)}")
    for service, shares in (report.profile or {}).items():
        table = Table(title=f"py-spy, {service}, {report.concurrency} in flight (samples holding the GIL)")
        table.add_column("function")
        table.add_column("inclusive %", justify="right")
        table.add_column("self %", justify="right")
        for function, inclusive_pct, self_pct in shares:
            table.add_row(function, str(inclusive_pct), str(self_pct))
        console.print(table)
    if report.profile_dir:
        console.print(f"profiles (raw stacks, flamegraph SVG, py-spy logs): {report.profile_dir}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
