"""Settings of the Rucio client: `EB_RUCIO_*` variables; keyword arguments take precedence.

The server's URL comes from the composition root (`EB_RUCIO_URL` or the pools file); the token is
`EB_RUCIO_TOKEN` or `EB_RUCIO_TOKEN_FILE` (a file re-read when it changes, and at once on a 401).
A look-up runs while a quote waits, so its limits are tighter than a platform's: with these
defaults one look-up makes at most 3 requests and lasts at most 20 s + 5 s.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.http.settings import HttpSettings


class RucioSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_RUCIO_")
    label = "rucio"

    token: SecretStr | None = None
    timeout_s: float = Field(5.0, gt=0)
    attempts: int = Field(3, ge=1)
    backoff_s: float = Field(0.2, ge=0)
    max_backoff_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(5.0, ge=0)
    budget_s: float = Field(20.0, gt=0)
    # Successful answers are kept this long per DID, and at most this many of them.
    cache_s: float = Field(300.0, ge=0)
    max_cache_entries: int = Field(4096, ge=1)
