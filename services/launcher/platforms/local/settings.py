"""Settings of the `local` platform: `EB_LOCAL_*` variables; keyword arguments take precedence.

The HTTP fields (`timeout_s`, `attempts`, `backoff_s`, `budget_s`, ...) apply to fetching a notebook
or a data resource from an http(s) URL.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.http.settings import HttpSettings


class LocalSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_LOCAL_")
    label = "local"

    max_notebook_bytes: int = Field(50 * 2**20, gt=0)
    # Staged input data is bounded so a wrong URL cannot fill the disk.
    max_data_bytes: int = Field(10 * 2**30, gt=0)
    # Given by the launcher from the pools of this platform (`Pool.allowed_paths`/`allowed_hosts`):
    # the local folders, and the internal hosts, notebook and data locations may name.
    allowed_paths: list[Path] = Field(default_factory=list)
    allowed_hosts: list[str] = Field(default_factory=list)
    # Given by the launcher: folders a run must never see (the broker's data dir, the work root).
    hidden_paths: list[Path] = Field(default_factory=list)
    # Per-process limits of a run besides those of its booking (see containment.py); the process
    # count is that of the broker's whole user, so it only stops a fork bomb.
    max_open_files: int = Field(1024, ge=16)
    max_processes: int = Field(4096, ge=16)
    # Run inside bwrap when it is installed and works here; false: never (a warning at start).
    sandbox: bool = True
