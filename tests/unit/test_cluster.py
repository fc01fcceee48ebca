"""A cluster's pieces that need no server: the URL list, each node's configuration, the routes'
secret, the streams' replicas, and the fault report's longest gap."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from shared.bus.servers import NoServerUrl, server_urls
from shared.bus.streams import StreamLimits, stream_configs
from shared.ops.cluster import (
    CLUSTER_NAME,
    ROUTE_USER,
    ClusterSizeError,
    Node,
    check_size,
    node_config,
    route_secret,
    write_node_configs,
)
from shared.ops.faults import longest_gap
from shared.ops.secured import SecuredBus
from shared.settings import Settings

NODES = [Node("n1", 4222, 6222), Node("n2", 4223, 6223), Node("n3", 4224, 6224)]


def test_the_url_setting_is_one_server_or_a_comma_separated_list() -> None:
    assert server_urls("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    assert server_urls(" nats://a:1, nats://b:2 ,nats://c:3,") == ["nats://a:1", "nats://b:2", "nats://c:3"]
    with pytest.raises(NoServerUrl, match="no NATS server"):
        server_urls(" , ")


def test_a_node_keeps_the_secured_configuration_and_routes_to_the_others_with_the_password() -> None:
    base = {"accounts": {"APP": {"jetstream": "enabled"}}, "authorization": {"timeout": 2}}
    config = node_config(base, NODES[1], NODES, SecretStr("s3cret"))
    assert config["accounts"] == base["accounts"] and config["authorization"] == base["authorization"]
    assert config["server_name"] == "n2"
    cluster = config["cluster"]
    assert cluster["name"] == CLUSTER_NAME
    assert cluster["listen"] == "127.0.0.1:6223"
    assert cluster["authorization"] == {"user": ROUTE_USER, "password": "s3cret"}
    assert cluster["routes"] == [
        f"nats-route://{ROUTE_USER}:s3cret@127.0.0.1:6222",
        f"nats-route://{ROUTE_USER}:s3cret@127.0.0.1:6224",
    ]


def test_the_routes_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    bus = SecuredBus(tmp_path)
    bus.folder.mkdir(mode=0o700)
    bus.config_file.write_text('{"system_account": "SYS"}', encoding="utf-8")
    paths = write_node_configs(bus, NODES)
    secret = route_secret(bus)
    assert route_secret(bus).get_secret_value() == secret.get_secret_value()
    assert len(secret.get_secret_value()) >= 40
    for path in [bus.folder / "cluster-route.secret", *paths]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert secret.get_secret_value() in paths[0].read_text(encoding="utf-8")


@pytest.mark.parametrize("size", [1, 3, 5, 7])
def test_cluster_sizes_that_survive_a_node_loss(size: int) -> None:
    assert check_size(size) == size


@pytest.mark.parametrize("size", [0, 2, 4, 9])
def test_other_cluster_sizes_are_refused_with_the_rule(size: int) -> None:
    with pytest.raises(ClusterSizeError, match="odd number of nodes from 3 to 7"):
        check_size(size)


def test_streams_get_the_replicas_the_settings_ask_for() -> None:
    assert {c.num_replicas for c in stream_configs()} == {1}
    limits = StreamLimits.of(Settings(stream_replicas=3))
    assert {c.num_replicas for c in stream_configs(limits)} == {3}


def test_the_longest_gap_runs_from_the_first_request_to_the_end_of_the_last_call() -> None:
    assert longest_gap(None, [], 5.0) == 0.0
    assert longest_gap(10.0, [10.5, 11.0, 14.0, 14.2], 14.2) == pytest.approx(3.0)
    # A call that never got its answer leaves the gap open until the calls ended.
    assert longest_gap(10.0, [10.5], 20.0) == pytest.approx(9.5)
