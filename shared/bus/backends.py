"""Which implementation of the store port a service gets: SQLite unless ``EB_DATABASE_URL`` is set."""

from __future__ import annotations

from shared.bus.sqlite import SqliteStore
from shared.bus.store import Schema, Store
from shared.settings import Settings

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def service_store(
    settings: Settings, service: str, schema: Schema | str, *, single_writer: bool = False
) -> Store:
    """The service's store: ``<data dir>/<service>/<service>.sqlite``, or the schema ``<service>``
    of the PostgreSQL database that ``EB_DATABASE_URL`` names.

    ``single_writer``: the service's state must have one writing process (its in-memory state
    mirrors its tables). On PostgreSQL, where several processes can share the schema, the store
    then holds a lease, and waits at `Store.open` as a standby while another process holds it
    (`shared.bus.lease`); a SQLite file is one process's anyway."""
    if settings.database_url is None:
        path = settings.service_dir(service).resolve() / f"{service}.sqlite"
        return SqliteStore(path, schema, synchronous=settings.sqlite_synchronous)
    url = settings.database_url.get_secret_value()
    if not url.startswith(POSTGRES_SCHEMES):
        # The URL may hold a password: the message names only what was expected.
        raise ValueError("EB_DATABASE_URL must be a postgresql:// URL (unset: SQLite files in the data dir)")
    # Imported here, though it imports no driver itself: SQLite-only processes never load it.
    from shared.bus.postgres import PostgresStore

    return PostgresStore(url, service, schema, lease=single_writer)
