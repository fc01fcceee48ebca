"""What each pool's platform can run, learnt from the installed platform plugins.

The offers service never names a platform: a pool's executable and data kinds are whatever its
plugin declares (read from the plugin class, so no platform is built and no secret is needed here).
A pool whose platform plugin is not installed stops the service at start, with an error naming
the pool and the plugins that are installed: the launcher could not run that pool's sessions
either, and a pool skipped in silence would only show as offers that never come.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.offers.domain import PoolChoice
from shared.platforms.registry import UnknownPlatform, capabilities
from shared.pools import Pool


def pool_choices(pools: Sequence[Pool]) -> tuple[PoolChoice, ...]:
    choices = []
    for pool in pools:
        try:
            can = capabilities(pool.platform)
        except UnknownPlatform as missing:
            raise UnknownPlatform(
                pool.platform, missing.installed, needed_by=f"the pool {pool.name!r} (EB_POOLS)"
            ) from None
        choices.append(
            PoolChoice(
                pool.name,
                pool.platform,
                pool.prepare_s,
                tuple(pool.costs),
                tuple(pool.metrics),
                executable_kinds=can.executable_kinds,
                data_kinds=can.data_kinds,
                allowed_owners=pool.allowed_owner_tokens() if can.runs_on_host else None,
                allows_privileged=pool.allow_privileged,
                max_storage_gib=pool.limits.storage_gib,
                storage_costs=tuple(pool.storage_costs),
            )
        )
    return tuple(choices)
