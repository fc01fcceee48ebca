"""A site's processes: its leaf ``nats-server`` and the scheduler and launcher of its pools
(`shared.ops.site` says what they may do, and why the leaf has no JetStream)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors

from shared import subjects
from shared.auth import owners
from shared.auth.credentials import Credentials
from shared.bus.login import identity
from shared.bus.permissions import inbox_prefix
from shared.ops.embedded import (
    PRIVATE_UMASK,
    ServiceProcess,
    free_port,
    nats_server_binary,
    private_log,
    run_blocking,
    wait_for_port,
)
from shared.ops.secured import OPERATOR, BusKeys, SecuredBus, write_secret
from shared.ops.site import HUB_DOMAIN, SITE_SERVICES, leaf_config, site_settings, site_wirings
from shared.settings import Settings

#: The leaf server's name among the site's processes.
LEAF = "nats-server"


@dataclass
class SiteBroker:
    """A site: its leaf ``nats-server`` and the scheduler and launcher of its pools, as processes
    under one data folder (its keys in ``<data dir>/bus``)."""

    name: str
    hub_url: str
    pools_file: Path
    #: The site's key, as ``broker site-key`` wrote it at the hub.
    key_file: Path
    data_dir: Path
    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    #: How long `start` waits for the link to the hub's JetStream before it gives up.
    hub_timeout_s: float = 60.0
    leaf: subprocess.Popen[bytes] | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def keys(self) -> BusKeys:
        return SecuredBus(self.data_dir).keys

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return SecuredBus(self.data_dir).config_file

    def operator(self) -> Credentials:
        """The site operator's key: everything on the site's server (never more on the hub)."""
        return Credentials(nkey_seed_file=self.keys.seed_file(OPERATOR), acting_for=owners.local(OPERATOR))

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.port = self.port or free_port()
        # The services' settings as their environment (``env`` over this process's) gives them.
        merged = {**os.environ, **self.env}
        given = {key[3:].lower(): value for key, value in merged.items() if key.startswith("EB_")}
        base = Settings.model_validate(given)
        wirings = site_wirings(site_settings(base, self.name, self.pools_file.resolve()))
        seed = self.key_file.read_text(encoding="ascii").strip()
        document = leaf_config(wirings, self.keys, self.name, self.port, self.hub_url, seed)
        self.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(self.config_file, json.dumps(document, indent=2).encode())
        self.start_leaf()
        run_blocking(self.wait_for_hub(self.hub_timeout_s))
        for service in SITE_SERVICES:
            env = {
                **self.env,
                "EB_POOLS": str(self.pools_file.resolve()),
                "EB_SITE": self.name,
                "EB_REMOTE_POOLS": "",
                "EB_NATS_NKEY_SEED_FILE": str(self.keys.seed_file(identity(service, self.name))),
                "EB_MANAGE_STREAMS": "false",
                "EB_JS_DOMAIN": HUB_DOMAIN,
            }
            process = ServiceProcess(service, self.url, self.data_dir, env)
            process.start()
            self.services[service] = process

    async def wait_for_hub(self, timeout: float) -> None:
        """Until the hub's streams answer through the leaf (the services check them as they start,
        and stop if they cannot), as the site's scheduler: only its inbox hears the hub's replies."""
        service = identity(SITE_SERVICES[0], self.name)
        login = {"nkeys_seed": str(self.keys.seed_file(service)), "inbox_prefix": inbox_prefix(service)}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        nc = await nats.connect(self.url, max_reconnect_attempts=-1, **login)
        try:
            js = nc.jetstream(domain=HUB_DOMAIN, timeout=1.0)
            while True:
                try:
                    await js.stream_info(subjects.COMMANDS_STREAM)
                    return
                except (nats.errors.Error, TimeoutError) as exc:
                    if loop.time() > deadline:
                        raise TimeoutError(
                            f"the hub's streams do not answer through {self.hub_url} after "
                            f"{timeout:.0f} s: is the hub up, listening for leaf nodes, and this "
                            f"site's key registered? ({exc})"
                        ) from None
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def start_leaf(self) -> None:
        self.leaf = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_file)],
            stdout=private_log(self.data_dir / "nats-server.log"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            umask=PRIVATE_UMASK,
        )
        wait_for_port(self.port, 15, self.leaf)

    def stop_leaf(self) -> None:
        if self.leaf is not None and self.leaf.poll() is None:
            self.leaf.terminate()
            try:
                self.leaf.wait(10)
            except subprocess.TimeoutExpired:
                self.leaf.kill()
                self.leaf.wait(5)

    def stop(self) -> None:
        for service in self.services.values():
            service.stop()
        self.stop_leaf()

    def restart(self, name: str) -> None:
        """Start again a service, or the leaf server (``nats-server``), that has exited."""
        if name == LEAF:
            self.start_leaf()
        else:
            self.services[name].start()

    def dead(self) -> list[str]:
        """The services, and the leaf server, that have exited."""
        dead = [name for name, service in self.services.items() if not service.alive()]
        if self.leaf is not None and self.leaf.poll() is not None:
            dead.append(LEAF)
        return dead
