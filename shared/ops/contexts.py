"""Where client commands find the bus and who to be there, the way the nats CLI does it.

In order: ``--user``/``--password`` (or ``EB_NATS_USER``/``EB_NATS_PASSWORD``), ``--token`` (or
``EB_NATS_TOKEN``, an OIDC access token), else a context: the one ``--context``/``EB_CONTEXT``
names, or the current one. ``broker up`` writes a context for the person who ran it, so that
``broker submit`` works in another terminal with no extra step.

A context is a JSON file ``$XDG_CONFIG_HOME/execution-broker/context/<name>.json`` (default
``~/.config/…``; folder 0700, file 0600, like the nats CLI's ``~/.config/nats/context``) holding the
URL and the credentials; ``context.txt`` beside the folder names the current one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from shared.auth.credentials import Credentials, CredentialsError
from shared.ops.secured import write_secret
from shared.settings import DEFAULT_NATS_URL

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
DEFAULT_CONTEXT = "local"
MAX_CONTEXT_BYTES = 64 * 1024


class ContextError(ValueError):
    """A context that cannot be used; the message names the file, never a secret."""


@dataclass(frozen=True)
class Connection:
    url: str
    credentials: Credentials


def config_home() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "execution-broker"


def context_file(name: str) -> Path:
    if not NAME.fullmatch(name):
        raise ContextError(f"a context name is 1 to 64 letters, digits or . _ - (not {name[:64]!r})")
    return config_home() / "context" / f"{name}.json"


def current_name() -> str | None:
    path = config_home() / "context.txt"
    if not path.exists():
        return None
    name = path.read_text(encoding="utf-8").strip()
    return name or None


def save(
    name: str, url: str, credentials: Credentials, *, description: str = "", select: bool = True
) -> Path:
    """Write context `name` (replacing it) and make it the current one."""
    path = context_file(name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent.parent, 0o700)
    os.chmod(path.parent, 0o700)
    document: dict[str, str] = {"description": description, "url": url}
    if credentials.password is not None:
        document["user"] = credentials.user or ""
        document["password"] = credentials.password.get_secret_value()
    elif credentials.token is not None:
        document["token"] = credentials.token.get_secret_value()
    else:
        raise ContextError("a context holds a user's password or token, not a key")
    write_secret(path, json.dumps(document, indent=2).encode())
    if select:
        write_secret(config_home() / "context.txt", f"{name}\n".encode())
    return path


def load(name: str) -> Connection:
    path = context_file(name)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ContextError(f"there is no context {name!r} ({path})") from None
    if len(raw) > MAX_CONTEXT_BYTES:
        raise ContextError(f"{path} is larger than {MAX_CONTEXT_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError:
        raise ContextError(f"{path} is not JSON") from None
    if not isinstance(document, dict):
        raise ContextError(f"{path} does not hold a JSON object")
    url = document.get("url") or DEFAULT_NATS_URL
    user, password, token = document.get("user"), document.get("password"), document.get("token")
    try:
        if isinstance(user, str) and isinstance(password, str):
            credentials = Credentials.login(user, password)
        elif isinstance(token, str):
            credentials = Credentials(token=SecretStr(token))
        else:
            raise ContextError(f"{path} holds neither a user and password nor a token")
    except CredentialsError as exc:
        raise ContextError(f"{path}: {exc}") from None
    if not isinstance(url, str):
        raise ContextError(f"{path}: url is not a string")
    return Connection(url, credentials)


def resolve(
    *,
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    context: str | None,
) -> Connection:
    """The connection of a client command (see the module docstring for the order)."""
    try:
        if user is not None or password is not None:
            if not user or not password:
                raise ContextError("--user and --password (EB_NATS_USER, EB_NATS_PASSWORD) go together")
            return Connection(url or DEFAULT_NATS_URL, Credentials.login(user, password))
        if token is not None:
            return Connection(url or DEFAULT_NATS_URL, Credentials(token=SecretStr(token)))
    except CredentialsError as exc:
        raise ContextError(str(exc)) from None
    name = context or current_name()
    if name is None:
        raise ContextError(
            "no credentials: pass --user and --password (or set EB_NATS_USER and EB_NATS_PASSWORD), "
            "set EB_NATS_TOKEN, or start a broker with 'broker up', which writes a context"
        )
    found = load(name)
    return Connection(url or found.url, found.credentials)
