"""compose.yaml, checked without a Docker engine: it is a valid Compose file (the `compose-spec`
package's parser, which types every key of the Compose Specification), its cross-references hold
(dependencies, volumes, mounted files, the variables each container is given), the hub runs as a
secured 3-node cluster with PostgreSQL and one site, and the nats-server configuration it mounts,
completed by the configuration `broker bus-config` generates as compose's `setup` does, is one that
nats-server accepts (``nats-server -t``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose
from typer.main import get_command
from typer.testing import CliRunner

from shared.ops.cli import app
from shared.ops.secured import BusKeys, SecuredBus
from shared.ops.site import HUB_DOMAIN, SiteRegistry, leaf_config, site_settings, site_wirings
from shared.pools import load_pools
from shared.settings import Settings
from tests.deployment import ROOT, names_the_code_reads, nats_server_test

COMPOSE = ROOT / "compose.yaml"
NODE_CONFIG = ROOT / "deploy" / "nats" / "hub-node.conf"
NATS_NODES = ("nats-1", "nats-2", "nats-3")
BROKER_SERVICES = ("offers", "scheduler", "launcher")
#: Variables the broker's image may be given that no EB_ setting reads: the OpenTelemetry SDK's.
EXTERNAL = frozenset({"OTEL_EXPORTER_OTLP_ENDPOINT"})
#: The official postgres image's variables (its documentation's "Environment Variables").
POSTGRES_VARIABLES = frozenset({"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "POSTGRES_INITDB_ARGS"})
#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}``: compose's interpolation.
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
SAMPLE = {"NATS_ROUTE_PASSWORD": "0123abcd" * 8, "POSTGRES_PASSWORD": "4567ef01" * 8}


def interpolated() -> str:
    """compose.yaml as compose would read it with the documented .env (sample secrets)."""
    text = COMPOSE.read_text(encoding="utf-8")
    missing = sorted(set(INTERPOLATION.findall(text)) - set(SAMPLE))
    assert not missing, f"compose.yaml interpolates undocumented variables: {missing}"
    return INTERPOLATION.sub(lambda m: SAMPLE[m.group(1)], text)


def document() -> dict[str, Any]:
    return dict(yaml.safe_load(interpolated()))


def services() -> dict[str, Any]:
    return dict(document()["services"])


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in (service.get("environment") or {}).items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(v).split(":")[0], str(v).split(":")[1]) for v in service.get("volumes", [])]


# -- the Compose Specification -------------------------------------------------------------------


def test_compose_file_is_valid_by_the_compose_specification() -> None:
    # compose-spec cannot read YAML merge keys (<<), which compose resolves first: PyYAML does it.
    parsed = PyCompose.from_json(json.dumps(document()))
    parsed.validate()
    assert set(parsed.service_names()) == set(services())


def test_the_spec_parser_refuses_what_compose_refuses() -> None:
    # The check above is a real one: an unknown key and an unknown restart policy are errors.
    for bad in ({"image": "x", "restrat": "no"}, {"image": "x", "restart": "sometimes"}):
        with pytest.raises(ValueError):
            PyCompose.from_json(json.dumps({"services": {"a": bad}}))


def test_dependencies_volumes_and_mounted_files_exist() -> None:
    whole = document()
    named = set(whole["volumes"])
    for name, service in whole["services"].items():
        for dependency in service.get("depends_on", []):
            assert dependency in whole["services"], f"{name} depends on unknown {dependency}"
        for source, _ in mounts(service):
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, not in the repository"
            else:
                assert source in named, f"{name} mounts the undeclared volume {source}"


def test_every_published_port_is_on_loopback() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


def test_every_broker_command_exists() -> None:
    group = get_command(app)
    known = set(group.commands)  # type: ignore[attr-defined]
    for name, service in services().items():
        if "build" in service:
            assert service["command"][0] in known, f"{name} runs an unknown command {service['command']}"


def test_every_variable_given_to_the_broker_is_one_it_reads() -> None:
    known = names_the_code_reads() | EXTERNAL
    for name, service in services().items():
        if "build" in service:
            unknown = set(environment(service)) - known
            assert not unknown, f"{name} sets variables nothing reads: {sorted(unknown)}"
        elif service["image"].startswith("postgres:"):
            assert set(environment(service)) <= POSTGRES_VARIABLES


def test_secrets_come_from_the_environment_only() -> None:
    text = COMPOSE.read_text(encoding="utf-8") + NODE_CONFIG.read_text(encoding="utf-8")
    for sample in SAMPLE.values():
        assert sample not in text
    values = re.findall(r"password:\s*(\S+)", NODE_CONFIG.read_text(encoding="utf-8"))
    assert values and all(value.startswith("$") for value in values), values


# -- the hub: a secured 3-node cluster, PostgreSQL --------------------------------------------------


def test_the_hub_is_three_nats_nodes_on_the_node_configuration() -> None:
    names = set()
    for node in NATS_NODES:
        service = services()[node]
        assert service["command"] == ["-c", "/etc/nats/hub-node.conf"]
        assert ("./deploy/nats/hub-node.conf", "/etc/nats/hub-node.conf") in mounts(service)
        # The generated part, read-only, where the node configuration's include finds it.
        assert ("broker-data", "/etc/nats/broker") in mounts(service)
        names.add(environment(service)["NATS_SERVER_NAME"])
        routes = [environment(service)[f"NATS_ROUTE_{i}"] for i in (1, 2, 3)]
        password = environment(service)["NATS_ROUTE_PASSWORD"]
        assert routes == [f"nats-route://route:{password}@{other}:6222" for other in NATS_NODES]
    assert len(names) == 3, "server_name must be unique in a JetStream cluster"
    stores = {s for node in NATS_NODES for s, target in mounts(services()[node]) if target == "/data"}
    assert len(stores) == 3, "each node needs its own store"


def test_services_use_every_node_three_replicas_and_postgresql() -> None:
    urls = ",".join(f"nats://{node}:4222" for node in NATS_NODES)
    for name in BROKER_SERVICES:
        env = environment(services()[name])
        assert env["EB_NATS_URL"] == urls
        assert env["EB_STREAM_REPLICAS"] == "3"
        assert env["EB_MANAGE_STREAMS"] == "false"
        assert env["EB_NATS_NKEY_SEED_FILE"] == f"/data/bus/{name}.nk"
        assert env["EB_DATABASE_URL"].startswith("postgresql://broker:")
        assert env["EB_DATABASE_URL"].endswith("@postgres:5432/broker")
        assert services()[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert environment(services()["offers"])["EB_HTTP_NATS_NKEY_SEED_FILE"] == "/data/bus/http.nk"
    # The operator creates the streams with the same number of copies.
    assert environment(services()["streams"])["EB_STREAM_REPLICAS"] == "3"
    postgres = environment(services()["postgres"])
    assert "--locale=C" in postgres["POSTGRES_INITDB_ARGS"]


def test_a_service_runs_more_than_once_only_on_postgresql() -> None:
    processes: dict[str, list[dict[str, Any]]] = {}
    for service in services().values():
        if service.get("command", [None])[0] == "service":
            count = service.get("deploy", {}).get("replicas", 1)
            processes.setdefault(service["command"][1], []).extend([service] * count)
    # offers twice (competing on its durables), scheduler and launcher as active and standby.
    assert {name: len(found) for name, found in processes.items()} == dict.fromkeys(BROKER_SERVICES, 2)
    for found in processes.values():
        # A lease and the inbox claim are PostgreSQL's: on SQLite a second process is refused.
        assert all("EB_DATABASE_URL" in environment(service) for service in found)
    http = [service for service in processes["offers"] if "EB_HTTP_PORT" in environment(service)]
    assert len(http) == 1, "one offers process serves the published HTTP port"


# -- the site ---------------------------------------------------------------------------------------


def test_the_site_has_none_of_the_hubs_keys_or_database() -> None:
    site = services()["site"]
    assert "broker-data" not in {source for source, _ in mounts(site)}
    assert not {"EB_DATABASE_URL", "EB_NATS_NKEY_SEED_FILE"} & set(environment(site))
    hub = site["command"][site["command"].index("--hub") + 1]
    assert hub.split(",") == [f"nats://{node}:7422" for node in NATS_NODES]
    key = site["command"][site["command"].index("--key") + 1]
    # `site-key` (the init step) writes the key where the site reads it, into the site's volume.
    init = services()["site-key"]
    assert init["command"][init["command"].index("--out") + 1] == key
    assert ("site-data", "/site") in mounts(init) and ("site-data", "/site") in mounts(site)


def test_the_hubs_pools_include_the_sites_and_name_them_remote() -> None:
    pools = ROOT / "deploy" / "pools"
    hub = {pool.name: pool for pool in load_pools(Settings(), pools / "hub-pools.toml").pools}
    site = {pool.name: pool for pool in load_pools(Settings(), pools / "site-pools.toml").pools}
    assert set(site) <= set(hub)
    assert all(hub[name] == pool for name, pool in site.items()), "the hub and the site disagree"
    remote = environment(services()["offers"])["EB_REMOTE_POOLS"].split(",")
    assert sorted(remote) == sorted(site)


# -- nats-server accepts the configuration -----------------------------------------------------------


def node_variables(node: str) -> dict[str, str]:
    return {k: v for k, v in environment(services()[node]).items() if k.startswith("NATS_")}


def test_the_node_configuration_reads_exactly_the_variables_compose_gives() -> None:
    referenced = set(re.findall(r"\$([A-Z][A-Z0-9_]*)", NODE_CONFIG.read_text(encoding="utf-8")))
    for node in NATS_NODES:
        assert referenced == set(node_variables(node))


@pytest.fixture
def hub_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder laid out as a nats container sees it: the node configuration, and beside it the
    hub's volume after compose's init steps (`site-key`, then `setup`'s `bus-config`)."""
    data = tmp_path / "broker"
    setup = services()["setup"]
    env = {**environment(setup), "EB_DATA_DIR": str(data)}
    env["EB_POOLS"] = str(ROOT / "deploy" / "pools" / "hub-pools.toml")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    SiteRegistry(SecuredBus(data)).add("site1", ROOT / "deploy" / "pools" / "site-pools.toml")
    done = CliRunner().invoke(app, setup["command"])
    assert done.exit_code == 0, done.output
    (tmp_path / "hub-node.conf").write_text(NODE_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    return tmp_path


def test_nats_server_accepts_each_nodes_configuration(hub_folder: Path) -> None:
    generated = json.loads((hub_folder / "broker" / "bus" / "nats-server.json").read_text())
    # The site was admitted: its key is a leaf-only user of the application account.
    leaf_users = [u for u in generated["accounts"]["APP"]["users"] if u.get("allowed_connection_types")]
    assert len(leaf_users) == 1 and generated["authorization"]["auth_callout"]
    for node in NATS_NODES:
        done = nats_server_test(hub_folder / "hub-node.conf", node_variables(node))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "is valid" in done.stdout + done.stderr


def test_nats_server_refuses_a_node_without_its_route_password(hub_folder: Path) -> None:
    variables = {k: v for k, v in node_variables("nats-1").items() if k != "NATS_ROUTE_PASSWORD"}
    done = nats_server_test(hub_folder / "hub-node.conf", variables)
    assert done.returncode != 0
    assert "NATS_ROUTE_PASSWORD" in done.stderr


def test_the_node_keeps_the_hubs_jetstream_domain() -> None:
    text = NODE_CONFIG.read_text(encoding="utf-8")
    block = text[text.index("jetstream {") : text.index("}", text.index("jetstream {"))]
    assert f"domain: {HUB_DOMAIN}" in block


def test_the_sites_leaf_server_accepts_every_hub_node(tmp_path: Path) -> None:
    site = services()["site"]
    hub = site["command"][site["command"].index("--hub") + 1]
    pools = ROOT / "deploy" / "pools" / "site-pools.toml"
    wirings = site_wirings(site_settings(Settings(), "site1", pools))
    seed = BusKeys(tmp_path / "hub").seed("site1")
    document = leaf_config(wirings, BusKeys(tmp_path / "site"), "site1", 4223, hub, seed.get_secret_value())
    assert document["leafnodes"]["remotes"][0]["urls"] == hub.split(",")
    config = tmp_path / "leaf.json"
    config.write_text(json.dumps(document), encoding="utf-8")
    done = nats_server_test(config, {})
    assert done.returncode == 0, done.stdout + done.stderr
