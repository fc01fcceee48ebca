"""What a test needs from Debian (a sandbox, a browser, a database), installed by the test set-up
itself with apt-get when it is missing: never by hand, never by another package manager."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest


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
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", package], check=True, env=env, capture_output=True, timeout=900
        )
        found = _find(program, under)
        assert found is not None, f"{package} is installed but {program} is not where expected"
    return found
