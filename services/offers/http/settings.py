"""Settings of the HTTP API and dashboard, from ``EB_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EB_", extra="ignore")

    #: The port of the HTTP API; the offers service serves HTTP only when it is set.
    http_port: int | None = None
    #: Loopback only unless told otherwise (put a TLS proxy in front for anything else).
    http_host: str = "127.0.0.1"
    #: The base of every URL the broker writes (``meta.url``, ``Location``).
    public_url: str | None = None
    admin_username: str | None = None
    admin_password: str | None = Field(default=None, repr=False)
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    #: Anyone (even unauthenticated) may read any session and offer set.
    public_reads: bool = False
    jaeger_url: str = "http://localhost:16686"
    #: Signs the short-lived event-stream tokens (at least 32 bytes); unset, a random secret kept in
    #: ``<EB_DATA_DIR>/http-secret``.
    http_secret: str | None = Field(default=None, repr=False)
    event_token_ttl_s: int = 300

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://127.0.0.1:{self.http_port or 8082}"
