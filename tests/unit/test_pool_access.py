"""Who a pool runs code on this host for, and where its runs may read from: configuration checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.auth import owners
from shared.pools import Pool, PoolsConfigError, load_pools
from shared.settings import Settings


def test_the_built_in_pool_allows_nobody_unless_configured(tmp_path: Path) -> None:
    pool = load_pools(Settings(data_dir=tmp_path)).pools[0]
    assert pool.allowed_owners == [] and pool.allowed_owner_tokens() == frozenset()
    assert pool.allowed_paths == [] and pool.allowed_hosts == []


def test_the_built_in_pool_reads_its_access_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        pool_allowed_owners="local:alice, oidc:0123456789abcdef:sub-1,",
        pool_allowed_paths=f"{tmp_path},/srv/notebooks",
        pool_allowed_hosts="localhost",
    )
    pool = load_pools(settings).pools[0]
    assert pool.allowed_owner_tokens() == {
        owners.local("alice").token,
        owners.parse("oidc:0123456789abcdef:sub-1").token,
    }
    assert pool.allowed_paths == [tmp_path, Path("/srv/notebooks")]
    assert pool.allowed_hosts == ["localhost"]


@pytest.mark.parametrize(
    ("settings", "rule"),
    [
        ({"pool_allowed_owners": "alice"}, "'alice' is not an owner"),
        ({"pool_allowed_owners": "ldap:alice"}, "'ldap:alice' is not an owner"),
        ({"pool_allowed_paths": "notebooks"}, "'notebooks' must be an absolute path"),
    ],
)
def test_bad_access_settings_stop_the_service_naming_them(
    tmp_path: Path, settings: dict[str, str], rule: str
) -> None:
    with pytest.raises(PoolsConfigError, match=rule):
        load_pools(Settings(data_dir=tmp_path, **settings))  # type: ignore[arg-type]


def test_a_pools_file_names_its_owners(tmp_path: Path) -> None:
    pools = tmp_path / "pools.toml"
    pools.write_text(
        '[[pools]]\nname = "here"\nplatform = "local"\ncores = 2\nmemory_gib = 4\n'
        'allowed_owners = ["local:bob"]\nallowed_paths = ["/srv/data"]\n'
    )
    pool = load_pools(Settings(data_dir=tmp_path, pools=pools)).pools[0]
    assert pool.allowed_owner_tokens() == {owners.local("bob").token}
    with pytest.raises(ValueError, match="not an owner"):
        Pool(name="x", platform="local", cores=1, memory_gib=1, allowed_owners=["bob"])
