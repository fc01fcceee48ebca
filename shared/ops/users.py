"""``broker users``: the local identities (password users) of a data directory.

They live in ``<data dir>/identities.db`` (`shared.auth.identities`), the file the offers service's
HTTP API reads on every request (and the NATS auth callout is to read), so a change here holds at
the user's next request, without a restart. Passwords come from a prompt that does not echo, or
one line of standard input (``--password-stdin``), never from the command line, where other users
see it in ``ps``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shared.auth.identities import (
    FILE_NAME,
    IdentityError,
    IdentityStore,
    check_username,
    store_in,
)
from shared.auth.passwords import MAX_PASSWORD_BYTES

#: `broker up`'s data directory, unless ``--data-dir`` or ``EB_DATA_DIR`` (the services' setting,
#: set in the container image) says otherwise.
DEFAULT_DATA_DIR = Path(".broker-data")
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="EB_DATA_DIR", help="Where the broker keeps its state."),
]
Name = Annotated[str, typer.Argument(help="The user name (1 to 64 letters, digits or . _ @ + -).")]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of standard input."),
]

app = typer.Typer(
    no_args_is_help=True,
    help="Local identities: who may log in with a password.",
)
console = Console(soft_wrap=True)


def fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        # At most one byte more than allowed per character, and the line end: enough to tell "too
        # long" from "just right" without reading an unbounded line.
        line = sys.stdin.readline(MAX_PASSWORD_BYTES + 2)
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            fail("no password on standard input (one line is read)")
        return password
    prompted: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return prompted


def existing(data_dir: Path) -> IdentityStore:
    """The store of `data_dir`; a command that changes identities needs one to exist already."""
    if not (data_dir / FILE_NAME).exists():
        fail(f"there are no local identities in {data_dir} (add one with: broker users add NAME)")
    return store_in(data_dir)


def checked(username: str) -> str:
    try:
        check_username(username)
    except IdentityError as exc:
        fail(str(exc))
    return username


@app.command("add")
def add(
    name: Name,
    admin: Annotated[bool, typer.Option("--admin", help="Make the identity an administrator.")] = False,
    password_stdin: PasswordStdin = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Add a local identity."""
    username = checked(name)
    store = store_in(data_dir)
    if store.get(username) is not None:  # before the prompt: no password typed in vain
        fail(f"the identity {username} exists")
    try:
        store.add(username, read_password(password_stdin), admin=admin)
    except IdentityError as exc:
        fail(str(exc))
    typer.echo(f"added {username}{' (administrator)' if admin else ''}")


@app.command("passwd")
def passwd(name: Name, password_stdin: PasswordStdin = False, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Set the password of a local identity (a disabled one stays disabled)."""
    username = checked(name)
    store = existing(data_dir)
    if store.get(username) is None:
        fail(f"there is no identity {username}")
    try:
        store.set_password(username, read_password(password_stdin))
    except IdentityError as exc:
        fail(str(exc))
    typer.echo(f"password of {username} set")


@app.command("disable")
def disable(name: Name, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Disable a local identity: its next request is refused."""
    username = checked(name)
    try:
        existing(data_dir).disable(username)
    except IdentityError as exc:
        fail(str(exc))
    typer.echo(f"disabled {username}")


@app.command("enable")
def enable(name: Name, data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Enable a disabled local identity again."""
    username = checked(name)
    try:
        existing(data_dir).enable(username)
    except IdentityError as exc:
        fail(str(exc))
    typer.echo(f"enabled {username}")


@app.command("list")
def list_identities(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """The local identities: user name, administrator, disabled (never a password hash)."""
    # Listing creates nothing: no data directory means no identities.
    found = store_in(data_dir).all() if (data_dir / FILE_NAME).exists() else []
    if as_json:
        rows = [{"username": i.username, "admin": i.admin, "disabled": i.disabled} for i in found]
        typer.echo(json.dumps(rows))
        return
    table = Table(title=f"Local identities in {escape(str(data_dir))}")
    for column in ("user", "admin", "disabled"):
        table.add_column(column)
    for identity in found:
        table.add_row(identity.username, "yes" if identity.admin else "", "yes" if identity.disabled else "")
    console.print(table)
