"""What a test needs from Debian (a sandbox, a browser), installed by the test set-up itself with
apt-get when it is missing: never by hand, never by another package manager."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def debian_program(program: str, package: str) -> str:
    """The path of `program`; Debian's `package` is installed first when it is missing (as root)."""
    found = shutil.which(program)
    if found is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.skip(f"{program} is missing and cannot be installed here (needs root and apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, env=env, capture_output=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", package], check=True, env=env, capture_output=True, timeout=900
        )
        found = shutil.which(program)
        assert found is not None, f"{package} is installed but {program} is not on PATH"
    return found
