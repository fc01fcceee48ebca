"""How a service connects to a bus that requires authentication: its own nkey, its own inbox.

Opt-in: without a seed file a service connects anonymously, as it always has. With one, it uses the
private inbox prefix that `shared.bus.permissions.service_permissions` allows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.bus.permissions import inbox_prefix
from shared.settings import Settings


@dataclass(frozen=True)
class ServiceLogin:
    #: The file holding the service's nkey seed (``SU…``); nats-py reads it when it signs the
    #: server's nonce, so the secret is never kept in this object, a log line or a repr.
    nkey_seed_file: Path
    inbox_prefix: str

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect``."""
        return {"nkeys_seed": str(self.nkey_seed_file), "inbox_prefix": self.inbox_prefix}


def identity(service: str, site: str | None) -> str:
    """A service's name on the bus: at a site (``EB_SITE``) its own, so that its inbox is not the
    hub's service's, whose replies a site must never be allowed to read."""
    return service if site is None else f"{service}-at-{site}"


def service_login(settings: Settings, service: str) -> ServiceLogin | None:
    """The service's login from ``EB_NATS_NKEY_SEED_FILE``, or None: connect without one."""
    if settings.nats_nkey_seed_file is None:
        return None
    return ServiceLogin(settings.nats_nkey_seed_file, inbox_prefix(identity(service, settings.site)))
