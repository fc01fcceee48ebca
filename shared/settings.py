"""Settings shared by the services, read from ``EB_*`` environment variables."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.ivoa.identifiers import IvoId, default_ivoid

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


def _machine_memory_gib() -> int:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 4
    return max(1, (pages * size) // 2**30)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EB_", extra="ignore")

    nats_url: str = DEFAULT_NATS_URL
    #: The broker's IVOA identifier (its VOSI documents, `broker registry-record`); unset,
    #: ``ivo://<host>.local/execution-broker``, plainly not a registered authority.
    ivoid: IvoId = Field(default_factory=default_ivoid)
    # The service's own NATS identity: a file holding its nkey seed (see shared/bus/login.py). Unset,
    # the service connects without credentials.
    nats_nkey_seed_file: Path | None = None
    # Whether the service creates and updates the streams at start. A service whose NATS user has least
    # privilege may not: an operator identity creates them first and the service only checks them.
    manage_streams: bool = True
    # The site this service runs at, behind a leaf node (`broker site`; docs/security.md "Sites"): its
    # bus identity, inbox and shared durables are named after it, apart from the hub's own services.
    site: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]+$", max_length=64)
    # The JetStream domain of the streams: a site's services use the hub's (`shared.ops.site`).
    js_domain: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]+$", max_length=64)
    # Pools whose scheduler and launcher run at a site (comma-separated): this installation's offers
    # offers them, its own scheduler and launcher leave them alone (`shared.pools.served_pools`).
    remote_pools: str = ""
    #: An OIDC issuer whose access tokens users may log in with (HTTP bearer, NATS token), and the
    #: audience its tokens must name (required with an issuer).
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_leeway_s: int = Field(default=5, ge=0, le=300)
    data_dir: Path = Path(".data")
    # Where the launcher makes each session's work dir (EB_LOCAL_WORK_DIR): outside the data dir, so
    # that a run sandboxed with its work dir writable still cannot reach the services' files.
    local_work_dir: Path | None = None
    # A TOML file of resource pools (see shared/pools.py); without it, one built-in local pool.
    pools: Path | None = None
    rucio_url: str | None = None
    # Also read (with EB_RUCIO_TOKEN_FILE) by RucioSettings; kept here for the composition root.
    rucio_token: SecretStr | None = None
    # The built-in local pool: this machine's cores and memory unless configured.
    pool_name: str = "local"
    pool_platform: str = "local"
    pool_cores: int = Field(default_factory=lambda: os.cpu_count() or 1)
    pool_memory_gib: int = Field(default_factory=_machine_memory_gib)
    # A 1 s grid lets a local session start right after acceptance; batch pools use 60 s.
    pool_storage_gib: int = 1000
    pool_grid_s: int = 1
    pool_prepare_s: int = 2
    # The built-in pool runs user code on this host, so only for these owners (comma-separated,
    # "local:alice,oidc:<issuer hash>:<sub>"); `broker up` allows the operator. Empty: nobody.
    pool_allowed_owners: str = ""
    # Comma-separated local folders that notebook and data locations may name (absolute paths).
    pool_allowed_paths: str = ""
    # Comma-separated hosts in loopback/private/link-local ranges that http(s) locations may name.
    pool_allowed_hosts: str = ""
    offer_expiry_s: int = 300
    max_offers: int = 4
    # How long a request waits for every pool's quote before it is answered NO (a scheduler is down).
    quote_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    default_duration_s: int = 7200
    default_window_s: int = 7200
    # How long the scheduler keeps an expired hold, so an accept already in flight still books it.
    hold_grace_s: int = 60
    # Redelivery: a transient failure is retried after a delay, at most this many deliveries.
    max_deliver: int = 5
    ack_wait_s: int = 30
    otel_service_prefix: str = ""
    # Bounded growth (docs/reliability.md): the streams' byte limits (the oldest messages go first when
    # one is full; a warning is logged from 80 %), and how long finished sessions' rows and work
    # directories are kept (the events stream keeps its history as long).
    commands_max_bytes: int = Field(default=1 * 2**30, ge=2**20, le=2**50)
    events_max_bytes: int = Field(default=4 * 2**30, ge=2**20, le=2**50)
    # Copies of each stream on a JetStream cluster (`broker up --cluster 3` sets 3); the consumers
    # follow their stream's. 1 on a single server.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    retention_days: float = Field(default=30.0, gt=0, le=36500)
    # Per-owner limits, so one user cannot fill the pools' ledgers or the read model alone.
    max_live_sessions_per_owner: int = Field(default=100, ge=1, le=1_000_000)
    max_holds_per_owner: int = Field(default=200, ge=1, le=1_000_000)
    # fast: nats-server syncs to disk every 2 minutes and SQLite at checkpoints (a machine crash can
    # lose what was acknowledged since); safe: both sync every write (docs/reliability.md).
    durability: Literal["fast", "safe"] = "fast"
    # How the processes log (shared/logs.py): auto is text on a terminal and JSON otherwise (the
    # files `broker up` writes, a container's output).
    log_format: Literal["auto", "json", "text"] = "auto"
    # `broker up` and `broker site` rotate the log files they write past this size, keeping this
    # many older ones (<name>.log.1 …).
    log_max_bytes: int = Field(default=50 * 1024 * 1024, ge=64 * 1024, le=10 * 1024**3)
    log_backups: int = Field(default=3, ge=1, le=100)
    # Where the services keep their state: unset, one SQLite file each under the data dir (the
    # embedded default); a PostgreSQL URL (postgresql://user:password@host:port/database), one schema
    # each in that database (shared/bus/backends.py). Secret: it may hold the password.
    database_url: SecretStr | None = None

    @property
    def sqlite_synchronous(self) -> str:
        """The SQLite ``synchronous`` pragma of the durability chosen."""
        return "FULL" if self.durability == "safe" else "NORMAL"

    def work_root(self) -> Path:
        """The sessions' work dirs' parent: EB_LOCAL_WORK_DIR, else one folder per data dir under
        the system's temporary folder (``eb-work-<uid>/<hash of the data dir>``)."""
        if self.local_work_dir is not None:
            return self.local_work_dir.resolve()
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()).resolve() / f"eb-work-{os.getuid()}" / digest

    def service_dir(self, service: str) -> Path:
        """Where a service keeps its files; made when the service first writes there (``Store.open``),
        so that building a service (for its wiring, say) leaves no trace on disk."""
        return self.data_dir / service
