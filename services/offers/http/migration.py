"""Moving the local identities of older data directories, kept in the offers database, into the
identity store that the HTTP API, the auth callout and ``broker users`` share.

Their scrypt hashes move as they are (`IdentityStore.import_hash`): each keeps working and becomes
an Argon2id hash at its next login. A moved row is deleted from the offers database, so no stale
copy of a password hash stays behind to outlive a reset or a ``disable``; running again moves
nothing, and an identity that the store has already keeps the store's version.
"""

from __future__ import annotations

import asyncio
import logging

from services.offers import store as tables
from services.offers.store import ReadModel
from shared.auth.identities import IdentityError, IdentityStore

log = logging.getLogger(__name__)


async def move_legacy_identities(read_model: ReadModel, identities: IdentityStore) -> int:
    """Move every identity of the offers database into `identities`; the number newly added."""
    rows = await tables.legacy_identities(read_model)
    if not rows:
        return 0
    added: list[str] = []
    present: list[str] = []
    refused: list[str] = []
    for username, stored_hash in rows:
        try:
            new = await asyncio.to_thread(identities.import_hash, username, stored_hash)
        except IdentityError:
            refused.append(username)
            continue
        (added if new else present).append(username)
    await tables.forget_legacy_identities(read_model, added + present)
    log.info(
        "moved %d local identities from the offers database to %s (%d were there already)",
        len(added),
        identities.path,
        len(present),
    )
    if refused:
        names = ", ".join(repr(name) for name in refused)
        log.warning(
            "kept %d identities with invalid user names in the offers database: %s", len(refused), names
        )
    return len(added)
