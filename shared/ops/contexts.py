"""Where client commands find the bus and who to be there, the way the nats CLI does it.

In order: ``--user``/``--password`` (or ``EB_NATS_USER``/``EB_NATS_PASSWORD``), ``--token`` (or
``EB_NATS_TOKEN``, an OIDC access token), ``--creds`` (or ``EB_NATS_CREDS``, a credentials file),
else a context: the one ``--context``/``EB_CONTEXT`` names, or the current one. ``broker up`` writes
a context for the person who ran it, so that ``broker submit`` works in another terminal with no
extra step.

A context is a JSON file ``$XDG_CONFIG_HOME/execution-broker/context/<name>.json`` (default
``~/.config/…``; folders 0700, files 0600, like the nats CLI's ``~/.config/nats/context``) holding
the URL and ``creds``, the path of a credentials file (``credentials/<name>.json``: ``user`` and
``password``, or ``token``); a hand-written context may hold those fields itself, as the nats CLI's
do. ``context.txt`` beside the folders names the current one.
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


def _private_folder(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def save_credentials(path: Path, credentials: Credentials) -> Path:
    """A credentials file (0600): a user's password or token, never a key."""
    document: dict[str, str] = {}
    if credentials.password is not None:
        document["user"] = credentials.user or ""
        document["password"] = credentials.password.get_secret_value()
    elif credentials.token is not None:
        document["token"] = credentials.token.get_secret_value()
    else:
        raise ContextError("a credentials file holds a user's password or a token, not a key")
    _private_folder(path.parent)
    write_secret(path, json.dumps(document, indent=2).encode())
    return path


def save(
    name: str, url: str, credentials: Credentials, *, description: str = "", select: bool = True
) -> Path:
    """Write context `name` and its credentials file (replacing both); make it the current one."""
    path = context_file(name)
    _private_folder(config_home())
    creds = save_credentials(config_home() / "credentials" / f"{name}.json", credentials)
    _private_folder(path.parent)
    document = {"description": description, "url": url, "creds": str(creds)}
    write_secret(path, json.dumps(document, indent=2).encode())
    if select:
        write_secret(config_home() / "context.txt", f"{name}\n".encode())
    return path


def _read_json(path: Path, what: str) -> dict[str, object]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ContextError(f"there is no {what} {path}") from None
    except OSError as exc:
        raise ContextError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONTEXT_BYTES:
        raise ContextError(f"{path} is larger than {MAX_CONTEXT_BYTES} bytes")
    try:
        document = json.loads(raw)
    except ValueError:
        raise ContextError(f"{path} is not JSON") from None
    if not isinstance(document, dict):
        raise ContextError(f"{path} does not hold a JSON object")
    return document


def _credentials_in(document: dict[str, object], path: Path) -> Credentials:
    user, password, token = document.get("user"), document.get("password"), document.get("token")
    try:
        if isinstance(user, str) and isinstance(password, str):
            return Credentials.login(user, password)
        if isinstance(token, str):
            return Credentials(token=SecretStr(token))
    except CredentialsError as exc:
        raise ContextError(f"{path}: {exc}") from None
    raise ContextError(f"{path} holds neither a user and password nor a token")


def load_credentials(path: Path) -> Credentials:
    """A credentials file (``EB_NATS_CREDS``, a context's ``creds``)."""
    return _credentials_in(_read_json(path, "credentials file"), path)


def load(name: str) -> Connection:
    path = context_file(name)
    document = _read_json(path, f"context {name!r}:")
    url = document.get("url") or DEFAULT_NATS_URL
    if not isinstance(url, str):
        raise ContextError(f"{path}: url is not a string")
    creds = document.get("creds")
    if isinstance(creds, str) and creds:
        return Connection(url, load_credentials(Path(creds).expanduser()))
    return Connection(url, _credentials_in(document, path))


def resolve(
    *,
    url: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    context: str | None,
    creds: Path | None = None,
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
    if creds is not None:
        return Connection(url or DEFAULT_NATS_URL, load_credentials(creds))
    name = context or current_name()
    if name is None:
        raise ContextError(
            "no credentials: pass --user and --password (or set EB_NATS_USER and EB_NATS_PASSWORD), "
            "set EB_NATS_TOKEN or EB_NATS_CREDS, or start a broker with 'broker up', which writes a context"
        )
    found = load(name)
    return Connection(url or found.url, found.credentials)
