"""Settings of the `canfar` platform: `EB_CANFAR_*` variables; keyword arguments take precedence.

| keyword | variable | default |
|---|---|---|
| url | EB_CANFAR_URL | e.g. https://ws-uv.canfar.net/skaha; or `service` with `registry` |
| service | EB_CANFAR_SERVICE | the skaha service's IVOA identifier, e.g. ivo://canfar.cam.uksrc.org/skaha |
| registry | EB_CANFAR_REGISTRY | the registry's resource-caps URL, e.g. https://…/reg/resource-caps |
| discovery_ttl_s | EB_CANFAR_DISCOVERY_TTL_S | 600 (how long what the registry said is used) |
| api | EB_CANFAR_API | v1 (or v0 for older deployments; with `service`, the one preferred) |
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
from shared.ivoa.identifiers import ivoid_problem
from shared.ivoa.registry import url_problem

SessionType = Literal["notebook", "desktop", "carta", "headless", "contributed", "firefly"]
ApiVersion = Literal["v1", "v0"]
SESSION_TYPES: tuple[str, ...] = get_args(SessionType)
API_VERSIONS: tuple[str, ...] = get_args(ApiVersion)


class CanfarSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_CANFAR_")
    label = "canfar"

    # Either the base URL, or the service's IVOA identifier and the registry that finds it
    # (canfar/discovery.py); exactly one of the two ways.
    url: str = ""
    service: str = ""
    registry: str = ""
    discovery_ttl_s: float = Field(600.0, gt=0)
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

    @field_validator("service")
    @classmethod
    def _an_ivoid(cls, service: str) -> str:
        problem = ivoid_problem(service) if service else None
        if problem is not None:
            raise ValueError(f"the service {problem}")
        return service

    @field_validator("registry")
    @classmethod
    def _a_safe_url(cls, registry: str) -> str:
        problem = url_problem(registry) if registry else None
        if problem is not None:
            raise ValueError(f"the registry URL {problem}")
        return registry

    @field_validator("api", "session_type", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_way_to_the_service(self) -> CanfarSettings:
        if self.url and (self.service or self.registry):
            raise ValueError(
                "give either EB_CANFAR_URL or EB_CANFAR_SERVICE with EB_CANFAR_REGISTRY, not both"
            )
        if bool(self.service) != bool(self.registry):
            given, missing = ("SERVICE", "REGISTRY") if self.service else ("REGISTRY", "SERVICE")
            raise ValueError(
                f"EB_CANFAR_{given} needs EB_CANFAR_{missing}: the service is found by its IVOA "
                "identifier in that registry's resource-caps"
            )
        return self

    @property
    def discovered(self) -> bool:
        """Whether the base URL and API version come from the registry, not from the settings."""
        return bool(self.service)

    @model_validator(mode="after")
    def _retries_is_attempts(self) -> CanfarSettings:
        if self.retries is not None:
            self.attempts = self.retries
        return self
