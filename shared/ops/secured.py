"""The secured bus of one broker installation: its keys and the nats-server configuration that uses
them, written into the data directory (folder 0700, files 0600) and kept across restarts.

Three accounts, as nats-server's config-mode auth callout wants them:

* ``AUTH`` holds only the callout's own user, which answers ``$SYS.REQ.USER.AUTH``;
* ``APP`` holds JetStream and everything of the broker: each service as its own nkey user with the
  permissions its wiring table gives it (`shared.bus.permissions`), the HTTP API's gateway user,
  the operator's nkey (unrestricted: it creates the streams), and every user the callout admits,
  each with only their owner's subjects (`shared.auth.permissions`);
* ``SYS`` the system account.

Nobody connects without credentials: a client that is none of the nkey users is sent to the
callout, which admits a verified password or OIDC token, and refuses the rest.

The configuration is written anew at each start (the pools, hence the services' permissions, may
have changed); the keys are made once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from shared import subjects
from shared.auth.keys import CurveKey, Role, Signer, new_seed
from shared.bus.permissions import (
    DESTRUCTIVE_API,
    JS_API,
    Permissions,
    SubjectRules,
    inbox_prefix,
    service_permissions,
)
from shared.bus.wiring import Wiring

APP_ACCOUNT = "APP"
AUTH_ACCOUNT = "AUTH"
SYS_ACCOUNT = "SYS"
#: The folder of the keys and the server configuration, inside the data directory.
FOLDER = "bus"
CONFIG_FILE = "nats-server.json"
#: The HTTP API's identity on the bus (it submits for whoever HTTP authenticated).
GATEWAY = "http"
CALLOUT = "callout"
OPERATOR = "operator"
#: The callout accepts OIDC access tokens up to 16 KiB; the server's default protocol line is 4 KiB.
MAX_CONTROL_LINE = 20 * 1024
#: nats-server waits this long for the callout; the callout answers within 4 s (its
#: ``verify_timeout_s``). nats-server's default of 2 s refused valid logins on a loaded machine, where
#: one Argon2id check took over 1.5 s.
AUTH_TIMEOUT_S = 5


def write_secret(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the start (never readable by others, even for a moment)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


@dataclass(frozen=True)
class BusKeys:
    """The seed files of one installation, each made the first time it is asked for."""

    folder: Path

    def seed_file(self, name: str, role: Role = Role.USER) -> Path:
        path = self.folder / f"{name}.nk"
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_secret(path, new_seed(role).get_secret_value().encode("ascii"))
        return path

    def seed(self, name: str, role: Role = Role.USER) -> SecretStr:
        return SecretStr(self.seed_file(name, role).read_text(encoding="ascii").strip())

    def public_key(self, name: str, role: Role = Role.USER) -> str:
        return Signer(self.seed(name, role), role).public_key

    @property
    def issuer_seed(self) -> SecretStr:
        """The account key that signs the callout's answers (``auth_callout.issuer``)."""
        return self.seed("issuer", Role.ACCOUNT)

    @property
    def xkey_seed(self) -> SecretStr:
        """The curve key the server seals its callout requests to (``auth_callout.xkey``)."""
        return self.seed("xkey", Role.CURVE)


def gateway_permissions(service_consumers: Iterable[str]) -> Permissions:
    """The HTTP API's: every owner's commands, answers and events (it acts for whoever HTTP
    authenticated), read-only JetStream on the events stream, the services' health subjects (for
    ``/availability``), and no service durable."""
    events = subjects.EVENTS_STREAM
    readable = (subjects.OFFERSET, subjects.UPDATE_RESULT, subjects.SESSION)
    denied = [*DESTRUCTIVE_API]
    for name in sorted(set(service_consumers)):
        denied += [f"{JS_API}.CONSUMER.CREATE.*.{name}", f"{JS_API}.CONSUMER.CREATE.*.{name}.>"]
        denied += [f"{JS_API}.CONSUMER.DURABLE.CREATE.*.{name}", f"{JS_API}.CONSUMER.MSG.NEXT.*.{name}"]
    return Permissions(
        publish=SubjectRules(
            allow=(
                subjects.REQUEST.filter(),
                subjects.UPDATE.filter(),
                # The services' health subjects, for GET /availability (a core request, answered by
                # the services, which may respond on the gateway's inbox).
                subjects.HEALTH.filter(),
                f"{JS_API}.INFO",
                f"{JS_API}.STREAM.INFO.{events}",
                f"{JS_API}.CONSUMER.CREATE.{events}",
                f"{JS_API}.CONSUMER.CREATE.{events}.>",
                "$JS.FC.>",
            ),
            deny=tuple(denied),
        ),
        subscribe=SubjectRules(allow=(f"{inbox_prefix(GATEWAY)}.>", *(p.filter() for p in readable))),
        allow_responses=False,
    )


def service_consumers(wirings: Iterable[Wiring]) -> frozenset[str]:
    """Every consumer name the services use: their durables and the readers of the start-up replay
    (`Consumer.replay_readers`), which no user may create, redefine or pull from either."""
    durables = (c for w in wirings for c in w.consumers)
    return frozenset(name for c in durables for name in (c.durable, *(n for n, _ in c.replay_readers)))


@dataclass(frozen=True)
class SecuredBus:
    """Where a secured installation keeps its keys, and its server configuration."""

    data_dir: Path

    @property
    def folder(self) -> Path:
        return self.data_dir / FOLDER

    @property
    def keys(self) -> BusKeys:
        return BusKeys(self.folder)

    @property
    def config_file(self) -> Path:
        return self.folder / CONFIG_FILE

    @property
    def callout_ready_file(self) -> Path:
        """Present while a callout answers: a login tried before it subscribed would be refused."""
        return self.folder / "callout.ready"

    @property
    def operator_seed_file(self) -> Path:
        return self.keys.seed_file(OPERATOR)

    def service_seed_file(self, service: str) -> Path:
        return self.keys.seed_file(service)

    def write_config(self, wirings: Mapping[str, Wiring], *, sync_always: bool = False) -> Path:
        """The server configuration for these services' wirings (JSON: nats-server reads it)."""
        document = self.server_config(wirings, sync_always=sync_always)
        write_secret(self.config_file, json.dumps(document, indent=2).encode())
        return self.config_file

    def server_config(self, wirings: Mapping[str, Wiring], *, sync_always: bool = False) -> dict[str, Any]:
        """``sync_always`` (``EB_DURABILITY=safe``): the server writes every message to disk before
        it acknowledges it, instead of every two minutes (nats-server's ``sync_interval``)."""
        keys = self.keys
        consumers = service_consumers(wirings.values())
        app_users: list[dict[str, Any]] = []
        for name, wiring in sorted(wirings.items()):
            permissions = service_permissions(wiring, inbox_prefix=inbox_prefix(name))
            app_users.append({"nkey": keys.public_key(name), "permissions": permissions.to_nats_config()})
        gateway = gateway_permissions(consumers)
        app_users.append({"nkey": keys.public_key(GATEWAY), "permissions": gateway.to_nats_config()})
        app_users.append({"nkey": keys.public_key(OPERATOR)})
        callout = keys.public_key(CALLOUT)
        durability = {"jetstream": {"sync_interval": "always"}} if sync_always else {}
        return {
            **durability,
            "max_control_line": MAX_CONTROL_LINE,
            "accounts": {
                AUTH_ACCOUNT: {"users": [{"nkey": callout}]},
                APP_ACCOUNT: {"jetstream": "enabled", "users": app_users},
                SYS_ACCOUNT: {},
            },
            "system_account": SYS_ACCOUNT,
            "authorization": {
                "timeout": AUTH_TIMEOUT_S,
                "auth_callout": {
                    "issuer": Signer(keys.issuer_seed, Role.ACCOUNT).public_key,
                    "account": AUTH_ACCOUNT,
                    "auth_users": [callout, *(user["nkey"] for user in app_users)],
                    "xkey": CurveKey(keys.xkey_seed).public_key,
                },
            },
        }
