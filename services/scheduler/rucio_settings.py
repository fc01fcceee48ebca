"""Settings of the Rucio client: `EB_RUCIO_*` variables; keyword arguments take precedence.

The server's URL comes from the composition root (`EB_RUCIO_URL` or the pools file); the token is
`EB_RUCIO_TOKEN` or `EB_RUCIO_TOKEN_FILE` (a file re-read when it changes, and at once on a 401).
Without either, `EB_RUCIO_ACCOUNT`, `EB_RUCIO_USERNAME` and `EB_RUCIO_PASSWORD` (or
`EB_RUCIO_PASSWORD_FILE`) obtain tokens from Rucio's `/auth/userpass`, renewed before they end
(`EB_RUCIO_RENEW_BEFORE_S`, default 300 s; `services.scheduler.rucio_auth`).
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
    # Without a token: Rucio's own auth endpoint (`GET /auth/userpass`) gives one, renewed
    # `renew_before_s` before it ends (at the latest halfway through its life).
    account: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    renew_before_s: float = Field(300.0, ge=0)
    timeout_s: float = Field(5.0, gt=0)
    attempts: int = Field(3, ge=1)
    backoff_s: float = Field(0.2, ge=0)
    max_backoff_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(5.0, ge=0)
    budget_s: float = Field(20.0, gt=0)
    # Successful answers are kept this long per DID, and at most this many of them.
    cache_s: float = Field(300.0, ge=0)
    max_cache_entries: int = Field(4096, ge=1)
