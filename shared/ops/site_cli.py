"""``broker site-key`` (at the hub: admit a site) and ``broker site`` (at the site: run it)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shared.client import BrokerUnavailable, wait_for_services
from shared.ops.embedded import PRIVATE_UMASK
from shared.ops.logfiles import log_rotation
from shared.ops.secured import SecuredBus
from shared.ops.site import SITE_SERVICES, SiteError, SiteRegistry, write_site_key
from shared.ops.site_broker import SiteBroker
from shared.ops.supervise import supervise
from shared.ops.users import DEFAULT_DATA_DIR, DataDir
from shared.settings import Settings

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DEFAULT_SITE_DIR = Path(".broker-site")

PoolsFile = Annotated[
    Path,
    typer.Option("--pools", exists=True, dir_okay=False, help="The site's pools (the pools-file format)."),
]


def site_key(
    name: Annotated[str, typer.Argument(help="The site's name: letters, digits, _ and -.")],
    pools: PoolsFile,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the site's key (default: NAME.nk).")
    ] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Admit a site to this hub for the pools of FILE: its key (0600), which only the site's
    operator should hold. Restart `broker up --leafnode-port PORT` for it to take effect."""
    os.umask(PRIVATE_UMASK)
    registry = SiteRegistry(SecuredBus(data_dir.resolve()))
    try:
        seed = registry.add(name, pools)
    except SiteError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    target = write_site_key(seed, out or Path(f"{name}.nk"))
    served = next(site for site in registry.sites() if site.name == name).pool_names()
    console.print(f"site [bold]{name}[/bold] may run the scheduler and launcher of: {', '.join(served)}")
    console.print(f"  its key: {target} (0600); hand it to the site's operator privately")
    console.print("  restart the hub with --leafnode-port to admit it; its pools must be in the hub's pools")


def site(
    hub: Annotated[
        str,
        typer.Option("--hub", help="The hub's leafnode URL (nats://host:port), or a cluster's, with commas."),
    ],
    pools: PoolsFile,
    key: Annotated[
        Path,
        typer.Option(
            "--key", envvar="EB_SITE_KEY", exists=True, dir_okay=False, help="The key `broker site-key` made."
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="The site's name (default: the key file's name).")
    ] = None,
    data_dir: DataDir = DEFAULT_SITE_DIR,
    nats_port: Annotated[int, typer.Option("--nats-port", help="Port of the site's leaf server.")] = 4223,
) -> None:
    """Run a site: a leaf nats-server connected to the hub, and the scheduler and launcher of the
    pools of FILE behind it. The platforms' credentials (EB_CANFAR_*, …) stay in this environment."""
    os.umask(PRIVATE_UMASK)
    broker = SiteBroker(
        name or key.name.split(".")[0],
        hub,
        pools,
        key,
        data_dir.resolve(),
        port=nats_port,
        env=dict(os.environ),
    )
    try:
        broker.start()
        asyncio.run(wait_for_services(broker.url, SITE_SERVICES, timeout=60, credentials=broker.operator()))
    except (OSError, RuntimeError, TimeoutError, SiteError, BrokerUnavailable) as exc:
        broker.stop()
        err.print(f"[red]error:[/red] the site could not start: {exc}")
        raise typer.Exit(1) from None
    console.print(
        f"site {broker.name} up: leaf server {broker.url} linked to {hub}, data in {broker.data_dir}"
    )
    settings = Settings()
    rotation = log_rotation(broker.data_dir, settings.log_max_bytes, settings.log_backups)
    supervise(broker.dead, broker.restart, broker.stop, console, err, rotation)
