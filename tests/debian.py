"""What a test needs from Debian (a sandbox, a browser, a database), installed by the test set-up
itself with apt-get when it is missing: never by hand, never by another package manager."""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess

import pytest

#: Test runs on one machine take turns installing (this file is their lock).
APT_TURN = "/tmp/execution-broker-tests-apt.lock"
#: How long apt waits for dpkg's lock held by someone else.
APT_LOCK_WAIT_S = 600


def _find(program: str, under: str | None) -> str | None:
    """`program` on PATH, or in the newest folder matching the glob `under`."""
    found = shutil.which(program)
    if found is None and under is not None:
        for folder in sorted(glob.glob(under), reverse=True):
            found = shutil.which(program, path=folder)
            if found is not None:
                break
    return found


def debian_program(program: str, package: str, *, under: str | None = None) -> str:
    """The path of `program`; Debian's `package` is installed first when it is missing (as root).

    ``under``: a glob of folders off PATH that the package puts it in (PostgreSQL's server programs
    are in /usr/lib/postgresql/<version>/bin)."""
    found = _find(program, under)
    if found is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"{program} is missing and cannot be installed here (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # Two test runs on one machine (or apt's own timers) must queue, not fail on dpkg's lock:
        # our runs take turns on a file lock, and apt waits for anyone else's.
        wait = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT_S}"]
        with open(APT_TURN, "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            found = _find(program, under)
            if found is None:
                subprocess.run(
                    ["apt-get", *wait, "update"], check=True, env=env, capture_output=True, timeout=900
                )
                subprocess.run(
                    ["apt-get", *wait, "install", "-y", package],
                    check=True,
                    env=env,
                    capture_output=True,
                    timeout=900,
                )
        found = _find(program, under)
        assert found is not None, f"{package} is installed but {program} is not where expected"
    return found
