"""``broker up --cluster N``: N ``nats-server`` nodes on loopback forming one JetStream cluster.

Each node gets the secured configuration a single server gets (`shared.ops.secured`: the AUTH, APP
and SYS accounts, the auth callout, every service's nkey user) plus its own name, store directory,
client port and route port, and routes to the other nodes. The routes authenticate too: one user
with a generated password, kept 0600 with the other keys (``bus/cluster-route.secret``), that every
node requires of every incoming route and presents on its outgoing ones. A node's configuration
holds that password and is written 0600 like the single server's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from shared.ops.secured import SecuredBus, write_secret

CLUSTER_NAME = "eb"
ROUTE_USER = "route"
ROUTE_SECRET_FILE = "cluster-route.secret"
#: Copies of each stream on a cluster of any size: survives one node's loss, as DESIGN.md asks.
CLUSTER_REPLICAS = 3
#: A JetStream cluster needs a majority of its nodes up: 3 survives the loss of one, 5 of two.
MIN_NODES, MAX_NODES = 3, 7


class ClusterSizeError(ValueError):
    """A cluster size that cannot keep a majority through the loss of a node."""


def check_size(nodes: int) -> int:
    """1 (a single server) or an odd number from 3 to 7: an even cluster tolerates no more losses
    than the odd one below it, and every node here shares one machine."""
    if nodes == 1 or (MIN_NODES <= nodes <= MAX_NODES and nodes % 2 == 1):
        return nodes
    raise ClusterSizeError(f"--cluster is 1 (one server) or an odd number of nodes from 3 to 7, not {nodes}")


@dataclass(frozen=True)
class Node:
    """One node's name (nats-server's unique ``server_name``) and loopback ports; ``leaf_port``: its
    listener for sites' leaf nodes, on a hub that admits sites (each node has one, so a site
    reaches the hub while any node is up)."""

    name: str
    client_port: int
    route_port: int
    leaf_port: int | None = None

    @property
    def route_listen(self) -> str:
        return f"127.0.0.1:{self.route_port}"


def route_secret(bus: SecuredBus) -> SecretStr:
    """The routes' password, made the first time (0600, beside the nkey seeds) and kept after."""
    path = bus.folder / ROUTE_SECRET_FILE
    if not path.exists():
        bus.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_secret(path, secrets.token_urlsafe(32).encode("ascii"))
    return SecretStr(path.read_text(encoding="ascii").strip())


def node_config(base: dict[str, Any], node: Node, nodes: Sequence[Node], secret: SecretStr) -> dict[str, Any]:
    """``base`` (the single server's configuration) as node ``node`` of the cluster ``nodes``."""
    password = secret.get_secret_value()
    routes = [
        f"nats-route://{ROUTE_USER}:{password}@{other.route_listen}" for other in nodes if other != node
    ]
    leafnodes = base.get("leafnodes")
    if leafnodes is not None:
        if node.leaf_port is None:
            raise ValueError(f"node {node.name} of a hub that admits sites needs a leafnode port")
        leafnodes = {**leafnodes, "listen": f"127.0.0.1:{node.leaf_port}"}
    return {
        **base,
        **({"leafnodes": leafnodes} if leafnodes is not None else {}),
        "server_name": node.name,
        "cluster": {
            "name": CLUSTER_NAME,
            "listen": node.route_listen,
            "authorization": {"user": ROUTE_USER, "password": password},
            "routes": routes,
        },
    }


def write_node_configs(bus: SecuredBus, nodes: Sequence[Node]) -> list[Path]:
    """Each node's configuration file, from the single server's (``bus-config`` wrote it first)."""
    base = json.loads(bus.config_file.read_text(encoding="utf-8"))
    secret = route_secret(bus)
    paths = []
    for node in nodes:
        path = bus.folder / f"nats-server-{node.name}.json"
        write_secret(path, json.dumps(node_config(base, node, nodes, secret), indent=2).encode())
        paths.append(path)
    return paths
