"""Settings of the `jbo` platform: `EB_JBO_*` variables; keyword arguments take precedence.

| keyword | variable | default |
|---|---|---|
| url | EB_JBO_URL | (required) the runner's base URL |
| token / token_file | EB_JBO_TOKEN / EB_JBO_TOKEN_FILE | (one required) the bearer token |
| poll_s | EB_JBO_POLL_S | 30 |
| image | EB_JBO_IMAGE | ghcr.io/miguelcarcamov/emerlin_casa_pipeline:latest |
| allowed_images | EB_JBO_ALLOWED_IMAGES | the default image's repository (comma list of prefixes) |
| pipeline_version | EB_JBO_PIPELINE_VERSION | v2.0.20 |
| timeout_s | EB_JBO_TIMEOUT_S | 30 (per HTTP request) |
| attempts | EB_JBO_ATTEMPTS | 5 (per HTTP call, the first included) |
| backoff_s, max_backoff_s | EB_JBO_BACKOFF_S, EB_JBO_MAX_BACKOFF_S | 0.5, 30 (doubles, jittered) |
| budget_s | EB_JBO_BUDGET_S | 120 (one HTTP call, waits included) |
| max_retry_after_s | EB_JBO_MAX_RETRY_AFTER_S | 120 |
| queue_timeout_s | EB_JBO_QUEUE_TIMEOUT_S | 0 = none (the booked slot's end still applies) |
| prepare_estimate_s | EB_JBO_PREPARE_ESTIMATE_S | 60 |
| max_weblog_bytes | EB_JBO_MAX_WEBLOG_BYTES | 512 MiB |
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.http.settings import HttpSettings

DEFAULT_IMAGE = "ghcr.io/miguelcarcamov/emerlin_casa_pipeline:latest"
DEFAULT_PIPELINE_VERSION = "v2.0.20"


class JboSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_JBO_")
    label = "jbo"

    url: str = ""
    token: SecretStr | None = None
    poll_s: float = Field(30.0, gt=0)
    image: str = DEFAULT_IMAGE
    # Image prefixes that may run; none given: the repository of `image`.
    allowed_images: Annotated[tuple[str, ...], NoDecode] = ()
    pipeline_version: str = DEFAULT_PIPELINE_VERSION
    queue_timeout_s: float = Field(0.0, ge=0)
    prepare_estimate_s: float = 60.0
    max_weblog_bytes: int = Field(512 * 2**20, gt=0)

    @field_validator("url")
    @classmethod
    def _no_trailing_slash(cls, url: str) -> str:
        return url.rstrip("/")

    @field_validator("allowed_images", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        items = value.split(",") if isinstance(value, str) else value
        return tuple(str(item).strip() for item in items if str(item).strip())

    @property
    def image_prefixes(self) -> tuple[str, ...]:
        return self.allowed_images or (self.image.rsplit(":", 1)[0].split("@")[0],)
