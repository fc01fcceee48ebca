"""Settings of the `local` platform: `EB_LOCAL_*` variables; keyword arguments take precedence.

The HTTP fields (`timeout_s`, `attempts`, `backoff_s`, `budget_s`, ...) apply to fetching a notebook
or a data resource from an http(s) URL.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.http.settings import HttpSettings


class LocalSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_LOCAL_")
    label = "local"

    max_notebook_bytes: int = Field(50 * 2**20, gt=0)
    # Staged input data is bounded so a wrong URL cannot fill the disk.
    max_data_bytes: int = Field(10 * 2**30, gt=0)
