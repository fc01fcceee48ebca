"""A real, private PostgreSQL for the test run (docs/architecture.md says why Debian's package).

Debian's `postgresql` is installed with apt-get when missing (`tests.debian`). Its server refuses to
run as root, so the cluster belongs to ``nobody``: `initdb` and `postgres` run under ``setpriv``
(which executes them in its own place, so the server's process id is the one started), in a folder
of their own. It listens on 127.0.0.1 only, on a free port, with no Unix socket, and
every connection logs in with scram-sha-256: the superuser and the broker's own role (neither
superuser nor able to create roles) each have a password made for this run, never logged. Tests
get a fresh database (`database`) or a fresh schema name in one (the stores of the handler tests).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from shared.ops.embedded import free_port
from tests.debian import debian_program

#: The unprivileged user the cluster runs as.
OWNER = "nobody"
ADMIN = "eb_admin"
#: The role the broker's stores log in as: owns its databases, nothing more.
BROKER = "eb_broker"
START_TIMEOUT_S = 30.0


def _as_owner(*command: str) -> list[str]:
    return ["setpriv", f"--reuid={OWNER}", "--regid=nogroup", "--clear-groups", "--", *command]


@dataclass
class PostgresServer:
    """One cluster for the test run; `stop` removes it with its data."""

    bin_dir: Path
    root: Path
    port: int
    _admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    _broker_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _names: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        shutil.chown(self.root, OWNER)
        self.root.chmod(0o700)
        password_file = self.root / "pw"
        password_file.write_text(self._admin_password)
        password_file.chmod(0o600)
        shutil.chown(password_file, OWNER)
        try:
            subprocess.run(
                _as_owner(
                    str(self.bin_dir / "initdb"),
                    "--pgdata",
                    str(self.data_dir),
                    "--username",
                    ADMIN,
                    "--pwfile",
                    str(password_file),
                    "--auth",
                    "scram-sha-256",
                    "--locale",
                    "C",
                    "--encoding",
                    "UTF8",
                ),
                check=True,
                capture_output=True,
                timeout=120,
            )
        finally:
            password_file.unlink()
        log = (self.root / "postgres.log").open("ab")
        self._process = subprocess.Popen(
            _as_owner(
                str(self.bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                str(self.port),
                "-c",
                "unix_socket_directories=",
                # A cluster that lives as long as the test run: no fsync, as the SQLite stores'
                # tests on a temporary folder do not wait for the disk either.
                "-c",
                "fsync=off",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_ready()
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE PASSWORD {}").format(
                    sql.Identifier(BROKER), sql.Literal(self._broker_password)
                )
            )

    def _url(self, user: str, password: str, database: str) -> str:
        return f"postgresql://{user}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self._url(ADMIN, self._admin_password, "postgres"), autocommit=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited at start: see {self.root / 'postgres.log'}")
            try:
                self._admin().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def database(self, prefix: str = "t", *, icu_locale: str | None = None) -> str:
        """A new database owned by the broker's role, sorting text as ``C`` (or as the ICU locale
        given); its URL (with the password: never print it)."""
        name = f"{prefix}{next(self._names)}"
        locale = sql.SQL("LOCALE 'C'")
        if icu_locale is not None:
            locale = sql.SQL("LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(icu_locale))
        with self._admin() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 {}").format(
                    sql.Identifier(name), sql.Identifier(BROKER), locale
                )
            )
        return self._url(BROKER, self._broker_password, name)

    def schema_name(self, service: str) -> str:
        """A schema name no other store of the run has: a fresh store in a shared database."""
        return f"{service}_{next(self._names)}"

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGQUIT)  # immediate: its data goes with it anyway
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(10)
            if self._process.poll() is None:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Debian's PostgreSQL (installed if missing), initialised and started for this run."""
    initdb = debian_program("initdb", "postgresql", under="/usr/lib/postgresql/*/bin")
    debian_program("setpriv", "util-linux")
    if os.geteuid() != 0:
        raise RuntimeError("the test cluster is started as root, which hands it to 'nobody'")
    # Not under pytest's own temporary folder: that one is root's alone (0700), and 'nobody' must
    # reach its folder.
    root = Path(tempfile.mkdtemp(prefix="eb-postgres-"))
    server = PostgresServer(Path(initdb).parent, root, free_port())
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server
