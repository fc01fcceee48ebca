"""What a site may do on the hub, derived from its scheduler's and launcher's real wirings for its
own pools (`shared.ops.site`); the servers enforcing it are tested in tests/sites/test_sites.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.ops.cli import app
from shared.ops.secured import SecuredBus
from shared.ops.site import (
    HUB_DOMAIN,
    SiteError,
    SiteRegistry,
    hub_config,
    hub_urls,
    leaf_permissions,
    site_settings,
    site_wirings,
)
from shared.pools import PoolsConfigError, served_pools
from shared.settings import Settings

POOL = """
[[pools]]
name = "{name}"
platform = "local"
cores = 2
memory_gib = 4
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    site, hub = tmp_path / "site.toml", tmp_path / "hub.toml"
    site.write_text(POOL.format(name="at-ral"))
    hub.write_text(POOL.format(name="at-hub") + POOL.format(name="at-ral"))
    return site, hub


def test_a_site_may_say_only_what_its_pools_services_say(files: tuple[Path, Path]) -> None:
    site, _ = files
    rules = leaf_permissions(site_wirings(site_settings(Settings(), "ral", site)), "ral")
    published = rules.publish.allow
    assert "eb.scheduler.at-ral.evt.quoted" in published
    assert "eb.launcher.at-ral.cmd.launch" in published
    assert not [s for s in published if "at-hub" in s or s.startswith(("eb.requests", "eb.updates"))]
    assert not [s for s in published if s.startswith("$JS.API.")]  # only in the hub's domain
    assert f"$JS.{HUB_DOMAIN}.API.CONSUMER.MSG.NEXT.EB_COMMANDS.scheduler-at-ral" in published
    assert f"$JS.{HUB_DOMAIN}.API.STREAM.DELETE.>" in rules.publish.deny
    # It hears nothing but its own services' inboxes: never the hub's services' or a user's.
    assert rules.subscribe.allow == ("_INBOX_launcher-at-ral.>", "_INBOX_scheduler-at-ral.>")
    assert not rules.allow_responses


def test_the_hub_admits_a_registered_site_as_a_leaf_only(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, hub = files
    bus = SecuredBus(tmp_path / "hub")
    key = SiteRegistry(bus).add("ral", site)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    base = {"accounts": {"APP": {"users": []}}, "authorization": {"auth_callout": {"auth_users": ["U1"]}}}
    document = hub_config(base, bus, Settings(pools=hub), 7422)
    (user,) = document["accounts"]["APP"]["users"]
    assert user["allowed_connection_types"] == ["LEAFNODE"]
    assert user["nkey"] in document["authorization"]["auth_callout"]["auth_users"]
    assert document["leafnodes"] == {"listen": "127.0.0.1:7422", "no_advertise": True}
    assert document["jetstream"]["domain"] == HUB_DOMAIN
    json.dumps(document)
    # The hub's own scheduler and launcher leave the site's pools alone.
    here = served_pools(Settings(pools=hub, remote_pools=",".join(SiteRegistry(bus).remote_pools())))
    assert [pool.name for pool in here.pools] == ["at-hub"]


def test_a_site_pool_the_hub_does_not_offer_is_refused(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, _ = files
    bus = SecuredBus(tmp_path / "hub")
    SiteRegistry(bus).add("ral", site)
    only_hub = tmp_path / "only-hub.toml"
    only_hub.write_text(POOL.format(name="at-hub"))
    with pytest.raises(SiteError, match="at-ral"):
        hub_config({"accounts": {}}, bus, Settings(pools=only_hub), 7422)


def test_two_sites_cannot_claim_one_pool(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, _ = files
    registry = SiteRegistry(SecuredBus(tmp_path / "hub"))
    registry.add("ral", site)
    with pytest.raises(SiteError, match="already serves"):
        registry.add("jbo", site)
    with pytest.raises(SiteError, match="site name"):
        registry.add("a.b", site)


def test_every_pool_at_a_site_leaves_the_hub_none(files: tuple[Path, Path]) -> None:
    site, _ = files
    with pytest.raises(PoolsConfigError, match="EB_REMOTE_POOLS"):
        served_pools(Settings(pools=site, remote_pools="at-ral"))


def test_site_key_writes_the_sites_key_for_its_operator(files: tuple[Path, Path], tmp_path: Path) -> None:
    site, _ = files
    out = tmp_path / "handed-over.nk"
    args = ["site-key", "ral", "--pools", str(site), "--data-dir", str(tmp_path / "hub"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "at-ral" in result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("SU")
    assert out.read_text() not in result.output


def test_a_clustered_hubs_leafnode_urls_are_a_comma_list() -> None:
    # `broker site --hub` with every node of a clustered hub: the leaf moves between them.
    assert hub_urls(" nats://n1:7422, nats://n2:7422 ,nats://n3:7422,") == [
        "nats://n1:7422",
        "nats://n2:7422",
        "nats://n3:7422",
    ]
    with pytest.raises(SiteError, match="--hub names no URL"):
        hub_urls(" , ")
