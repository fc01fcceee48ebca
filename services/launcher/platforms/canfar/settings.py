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
| notebook_image | EB_CANFAR_NOTEBOOK_IMAGE | (required for interactive notebooks) |
| batch_image | EB_CANFAR_BATCH_IMAGE | (required for batch notebooks) an image with papermill or nbconvert |
| batch_runner | EB_CANFAR_BATCH_RUNNER | papermill (or nbconvert) |
| storage_url | EB_CANFAR_STORAGE_URL | (required for notebooks) e.g. https://ws-uv.canfar.net/arc |
| storage_user | EB_CANFAR_STORAGE_USER | (required for notebooks) the CANFAR user the token belongs to |
| storage_folder | EB_CANFAR_STORAGE_FOLDER | execution-broker (in home/<user>; a folder per session in it) |
| storage_authority | EB_CANFAR_STORAGE_AUTHORITY | cadc.nrc.ca~arc (of the VOSpace node URIs) |
| arc_mount | EB_CANFAR_ARC_MOUNT | /arc (where sessions see the storage's root) |
| max_notebook_bytes | EB_CANFAR_MAX_NOTEBOOK_BYTES | 52428800 (50 MiB, the notebook fetched and staged) |
| max_output_bytes | EB_CANFAR_MAX_OUTPUT_BYTES | 209715200 (200 MiB, the executed notebook fetched back) |
| max_data_bytes | EB_CANFAR_MAX_DATA_BYTES | 268435456 (256 MiB, each data resource staged; held in memory) |
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

import re
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from shared.http.settings import HttpSettings
from shared.ivoa.identifiers import ivoid_problem
from shared.ivoa.registry import url_problem

BatchRunner = Literal["papermill", "nbconvert"]
SessionType = Literal["notebook", "desktop", "carta", "headless", "contributed", "firefly"]
ApiVersion = Literal["v1", "v0"]
SESSION_TYPES: tuple[str, ...] = get_args(SessionType)
API_VERSIONS: tuple[str, ...] = get_args(ApiVersion)
# One path segment in the storage: no separator, no `..`, nothing a shell or skaha's space-split
# `args` would read differently.
SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    batch_image: str | None = None
    batch_runner: BatchRunner = "papermill"
    storage_url: str = ""
    storage_user: str = ""
    storage_folder: str = "execution-broker"
    storage_authority: str = "cadc.nrc.ca~arc"
    arc_mount: str = "/arc"
    max_notebook_bytes: int = Field(50 * 2**20, gt=0)
    max_output_bytes: int = Field(200 * 2**20, gt=0)
    max_data_bytes: int = Field(256 * 2**20, gt=0)
    # Given by the launcher from the pools of this platform: the hosts in private or loopback ranges
    # that a notebook's http(s) location may name (the launcher fetches it to stage it).
    allowed_hosts: list[str] = Field(default_factory=list)
    pending_timeout_s: float = 600.0
    poll_s: float = Field(2.0, gt=0)
    preparation_s: float = 60.0
    # The older name of `attempts`, still read.
    retries: int | None = Field(None, ge=1)

    @field_validator("url", "storage_url")
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

    @field_validator("storage_user")
    @classmethod
    def _one_segment(cls, user: str) -> str:
        if user and not SEGMENT.fullmatch(user):
            raise ValueError(f"{user!r} is not a CANFAR user name (letters, digits, . _ -)")
        return user

    @field_validator("storage_folder")
    @classmethod
    def _relative_folder(cls, folder: str) -> str:
        parts = folder.strip("/").split("/")
        if not all(SEGMENT.fullmatch(part) and part not in (".", "..") for part in parts):
            raise ValueError(f"{folder!r} must be a relative folder of letters, digits, . _ - (no ..)")
        return "/".join(parts)

    @field_validator("arc_mount")
    @classmethod
    def _absolute_mount(cls, mount: str) -> str:
        parts = mount.strip("/").split("/")
        if not mount.startswith("/") or not all(SEGMENT.fullmatch(p) and p != ".." for p in parts):
            raise ValueError(f"{mount!r} must be an absolute path of letters, digits, . _ -")
        return "/" + "/".join(parts)

    @field_validator("api", "session_type", "batch_runner", mode="before")
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
