"""Settings of the `canfar` platform: `EB_CANFAR_*` variables; keyword arguments take precedence.

| keyword | variable | default |
|---|---|---|
| url | EB_CANFAR_URL | (required) e.g. https://ws-uv.canfar.net/skaha |
| api | EB_CANFAR_API | v1 (or v0 for older deployments) |
| token, token_file | EB_CANFAR_TOKEN, EB_CANFAR_TOKEN_FILE | one needed; the file wins, re-read on 401 |
| session_type | EB_CANFAR_SESSION_TYPE | headless |
| notebook_image | EB_CANFAR_NOTEBOOK_IMAGE | (required for notebooks) |
| pending_timeout_s | EB_CANFAR_PENDING_TIMEOUT_S | 600 |
| poll_s | EB_CANFAR_POLL_S | 2 |
| timeout_s | EB_CANFAR_TIMEOUT_S | 30 (per HTTP request) |
| attempts (or retries) | EB_CANFAR_ATTEMPTS (or EB_CANFAR_RETRIES) | 5 (tries per HTTP call) |
| backoff_s, max_backoff_s | EB_CANFAR_BACKOFF_S, EB_CANFAR_MAX_BACKOFF_S | 0.5, 30 (doubles, jittered) |
| budget_s | EB_CANFAR_BUDGET_S | 120 (one HTTP call, waits included) |
| max_retry_after_s | EB_CANFAR_MAX_RETRY_AFTER_S | 120 |
| preparation_s | EB_CANFAR_PREPARATION_S | 60 |
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.http.settings import HttpSettings

SessionType = Literal["notebook", "desktop", "carta", "headless", "contributed", "firefly"]
ApiVersion = Literal["v1", "v0"]
SESSION_TYPES: tuple[str, ...] = get_args(SessionType)
API_VERSIONS: tuple[str, ...] = get_args(ApiVersion)


class CanfarSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_CANFAR_")
    label = "canfar"

    url: str = ""
    api: ApiVersion = "v1"
    token: SecretStr | None = None
    session_type: SessionType = "headless"
    notebook_image: str | None = None
    pending_timeout_s: float = 600.0
    poll_s: float = Field(2.0, gt=0)
    preparation_s: float = 60.0
    # The older name of `attempts`, still read.
    retries: int | None = Field(None, ge=1)

    @field_validator("url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @field_validator("api", "session_type", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _retries_is_attempts(self) -> CanfarSettings:
        if self.retries is not None:
            self.attempts = self.retries
        return self
