"""Sites: a pool's scheduler and launcher at the pool's own site, behind a NATS leaf node.

The hub (`broker up --leafnode-port`) listens for leaf nodes on the loopback address and admits only
the sites its operator registered (`broker site-key NAME --pools FILE`): each site is an nkey whose
permissions on the hub are those the scheduler and launcher of *its* pools need, derived from their
wiring tables by the same rules as every service's (`shared.bus.permissions`), with nothing else:

* publish what those services publish, their JetStream calls for their own durables (in the hub's
  JetStream domain: a site has no JetStream of its own) and their acks;
* receive only on those services' private inboxes (named after the site, never the hub's).

A site (`broker site --hub URL --pools FILE --key FILE`) runs its own ``nats-server`` without
JetStream, as a leaf node of the hub, secured like the hub: its scheduler and launcher connect with
their own nkeys and the same derived permissions, and nothing connects without a key. The
platforms' credentials (``EB_CANFAR_*``…) stay in the site's environment.

Why no JetStream at the site (docs/reliability.md "Sites"): the site's services use the hub's
JetStream domain (``EB_JS_DOMAIN=hub``: their ``$JS.API`` calls go out as ``$JS.hub.API`` and the
leaf carries them to the hub), so the streams, the durables and the duplicate window stay one
(single writer per pool, exactly once, nothing to reconcile after a cut). While the link is down
their publishes fail at once (no responders), so what they say waits in their SQLite outbox and the
relay sends it when the link is back. (nats-server's ``default_js_domain`` would do the rewriting
without the setting, but it warns that it is a temporary measure that will be removed.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared import subjects
from shared.bus.login import identity
from shared.bus.permissions import (
    Permissions,
    SubjectRules,
    inbox_prefix,
    service_permissions,
)
from shared.bus.wiring import Wiring
from shared.ops.secured import APP_ACCOUNT, OPERATOR, SYS_ACCOUNT, BusKeys, SecuredBus, write_secret
from shared.pools import PoolsConfigError, load_pools
from shared.service import load_service
from shared.settings import Settings

#: The services that run at a site; offers (the front desk, the HTTP API) stays at the hub.
SITE_SERVICES = ("scheduler", "launcher")
#: The hub's JetStream domain: a site's leaf sends its services' JetStream calls there.
HUB_DOMAIN = "hub"
#: Where the hub keeps the sites it admits: ``<name>.nk`` (the site's key) and ``<name>.toml``
#: (the pools it may serve), inside the bus folder.
SITES_FOLDER = "sites"
#: Set by `EmbeddedBroker` for ``broker bus-config``: the hub's leafnode listener.
LEAFNODE_PORT_VARIABLE = "EB_LEAFNODE_PORT"


class SiteError(ValueError):
    """A site that cannot be registered or served; the message never holds a key."""


@dataclass(frozen=True)
class Site:
    name: str
    #: The hub's copy of the pools file the site was registered with.
    pools_file: Path
    public_key: str

    def pool_names(self) -> list[str]:
        return [pool.name for pool in load_pools(Settings(), self.pools_file).pools]


@dataclass(frozen=True)
class SiteRegistry:
    """The sites one hub admits, in its bus folder (0700; the files 0600)."""

    bus: SecuredBus

    @property
    def folder(self) -> Path:
        return self.bus.folder / SITES_FOLDER

    @property
    def keys(self) -> BusKeys:
        return BusKeys(self.folder)

    def add(self, name: str, pools_file: Path) -> Path:
        """Register site ``name`` for the pools of ``pools_file``; its key file (made once)."""
        if not subjects.is_token(name) or "." in name or "@" in name or "=" in name:
            raise SiteError(f"site name {name!r} must be letters, digits, _ and -")
        try:
            names = [pool.name for pool in load_pools(Settings(), pools_file).pools]
        except PoolsConfigError as exc:
            raise SiteError(str(exc)) from None
        for other in self.sites():
            if other.name != name and (taken := set(names) & set(other.pool_names())):
                raise SiteError(f"site {other.name!r} already serves pool(s) {', '.join(sorted(taken))}")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(self.folder / f"{name}.toml", pools_file.read_bytes())
        return self.keys.seed_file(name)

    def sites(self) -> list[Site]:
        if not self.folder.is_dir():
            return []
        return [
            Site(path.stem, path, self.keys.public_key(path.stem))
            for path in sorted(self.folder.glob("*.toml"))
            if (self.folder / f"{path.stem}.nk").exists()
        ]

    def remote_pools(self) -> list[str]:
        return sorted(pool for site in self.sites() for pool in site.pool_names())


def hub_environment(data_dir: Path, leafnode_port: int | None) -> dict[str, str]:
    """What the hub's processes must know of its sites: the pools they run (``EB_REMOTE_POOLS``),
    and for ``broker bus-config`` the leafnode listener."""
    env = {"EB_REMOTE_POOLS": ",".join(SiteRegistry(SecuredBus(data_dir)).remote_pools())}
    if leafnode_port is not None:
        env[LEAFNODE_PORT_VARIABLE] = str(leafnode_port)
    return env


def site_settings(base: Settings, name: str, pools_file: Path) -> Settings:
    """The settings a site's services run with: its pools, its name, none of them remote."""
    return base.model_copy(update={"pools": pools_file, "site": name, "remote_pools": ""})


def site_wirings(settings: Settings) -> dict[str, Wiring]:
    """The site's services' wiring tables, built as they would run (nothing connects)."""
    return {name: load_service(name).wiring(settings) for name in SITE_SERVICES}


def site_service_permissions(service: str, wiring: Wiring, site: str) -> Permissions:
    """A site service's permissions: the derived ones, with its site inbox, its JetStream calls in
    the hub's domain (both on its own leaf server and, through the leaf, on the hub)."""
    return service_permissions(
        wiring, inbox_prefix=inbox_prefix(identity(service, site)), js_domain=HUB_DOMAIN
    )


def leaf_permissions(wirings: Mapping[str, Wiring], site: str) -> Permissions:
    """The site's permissions on the hub: on a leaf connection, *publish* is what the site may send
    into the hub and *subscribe* what the hub may send to it. The union of its services'
    (`site_service_permissions`), with nothing to receive but their inboxes: not their health or
    pools subjects, so a site never answers the hub's requests for its own services."""
    publish: list[str] = []
    receive: list[str] = []
    deny: tuple[str, ...] = ()
    for service, wiring in sorted(wirings.items()):
        derived = site_service_permissions(service, wiring, site)
        publish += derived.publish.allow
        deny = derived.publish.deny
        receive.append(f"{inbox_prefix(identity(service, site))}.>")
    return Permissions(
        publish=SubjectRules(allow=tuple(dict.fromkeys(publish)), deny=deny),
        subscribe=SubjectRules(allow=tuple(receive)),
        allow_responses=False,
    )


def hub_config(
    document: dict[str, Any], bus: SecuredBus, base: Settings, leafnode_port: int
) -> dict[str, Any]:
    """The hub's server configuration with a leafnode listener on the loopback address that admits
    each registered site with its key and `leaf_permissions`, and the hub's JetStream domain."""
    served = {pool.name for pool in load_pools(base).pools}
    users = []
    for site in SiteRegistry(bus).sites():
        unknown = sorted(set(site.pool_names()) - served)
        if unknown:
            raise SiteError(
                f"site {site.name!r} serves pool(s) {', '.join(unknown)} that the hub's pools do not "
                "list: offers would never ask for them"
            )
        wirings = site_wirings(site_settings(base, site.name, site.pools_file))
        permissions = leaf_permissions(wirings, site.name)
        users.append(
            {
                "nkey": site.public_key,
                "permissions": permissions.to_nats_config(),
                "allowed_connection_types": ["LEAFNODE"],
            }
        )
    # Sites are users of the application account that may connect only as leaf nodes, and skip the
    # callout (which admits people, never servers): their keys are all the proof there is.
    accounts = document["accounts"]
    app = {**accounts[APP_ACCOUNT], "users": [*accounts[APP_ACCOUNT]["users"], *users]}
    callout = document["authorization"]["auth_callout"]
    authorization = {
        **document["authorization"],
        "auth_callout": {**callout, "auth_users": [*callout["auth_users"], *(u["nkey"] for u in users)]},
    }
    return {
        **document,
        "accounts": {**accounts, APP_ACCOUNT: app},
        "authorization": authorization,
        "jetstream": {**document.get("jetstream", {}), "domain": HUB_DOMAIN},
        # Not advertised: the address is the hub's loopback, which means nothing at a site; a site
        # reaches the hub only by the URL its operator gave it (a relay, a tunnel, a public name).
        "leafnodes": {"listen": f"127.0.0.1:{leafnode_port}", "no_advertise": True},
    }


def write_bus_config(bus: SecuredBus, wirings: Mapping[str, Wiring], settings: Settings) -> Path:
    """``broker bus-config``: the hub's configuration, with its sites when it listens for them."""
    document = bus.server_config(wirings, sync_always=settings.durability == "safe")
    port = os.environ.get(LEAFNODE_PORT_VARIABLE)
    if port:
        document = hub_config(document, bus, settings, int(port))
    write_secret(bus.config_file, json.dumps(document, indent=2).encode())
    return bus.config_file


def leaf_config(
    wirings: Mapping[str, Wiring], keys: BusKeys, site: str, port: int, hub_url: str, site_seed: str
) -> dict[str, Any]:
    """The site's own server: no JetStream (the hub's domain serves it), its services as nkey users
    with their derived permissions, the site operator's key, and one leaf remote to the hub.
    ``hub_url`` may list every node of a clustered hub, comma-separated: the leaf tries them in
    turn, so the link survives the loss of the node it was on."""
    users: list[dict[str, Any]] = [
        {
            "nkey": keys.public_key(identity(service, site)),
            "permissions": site_service_permissions(service, wiring, site).to_nats_config(),
        }
        for service, wiring in sorted(wirings.items())
    ]
    users.append({"nkey": keys.public_key(OPERATOR)})
    return {
        "server_name": f"site-{site}",
        "listen": f"127.0.0.1:{port}",
        "accounts": {APP_ACCOUNT: {"users": users}, SYS_ACCOUNT: {}},
        "system_account": SYS_ACCOUNT,
        # A clustered hub's listeners, comma-separated: the leaf moves to another when one goes.
        "leafnodes": {"remotes": [{"urls": hub_urls(hub_url), "nkey": site_seed, "account": APP_ACCOUNT}]},
    }


def hub_urls(hub_url: str) -> list[str]:
    """The hub's leafnode URLs of ``--hub`` (one, or a clustered hub's nodes, comma-separated)."""
    urls = [url.strip() for url in hub_url.split(",") if url.strip()]
    if not urls:
        raise SiteError("--hub names no URL: give the hub's leafnode URL (nats://host:port)")
    return urls


def write_site_key(seed_file: Path, out: Path) -> Path:
    """A copy of the site's key for its operator (0600 from the start)."""
    write_secret(out, seed_file.read_bytes())
    return out
