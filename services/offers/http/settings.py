"""Settings of the HTTP API and dashboard, from ``EB_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.offers.http.origins import parse_origins
from shared.auth.oidc import url_problem
from shared.ivoa.identifiers import IvoId, default_ivoid


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EB_", extra="ignore")

    #: The port of the HTTP API; the offers service serves HTTP only when it is set.
    http_port: int | None = None
    #: Loopback only unless told otherwise (put a TLS proxy in front for anything else).
    http_host: str = "127.0.0.1"
    #: The base of every URL the broker writes (``meta.url``, ``Location``, the VOSI access URLs).
    public_url: str | None = None
    #: The broker's IVOA identifier, as in ``shared.settings.Settings`` (the same ``EB_IVOID``).
    ivoid: IvoId = Field(default_factory=default_ivoid)
    #: The HTTP API's own key on the bus (``broker up`` writes it: ``<data dir>/bus/http.nk``).
    http_nats_nkey_seed_file: Path | None = None
    admin_username: str | None = None
    admin_password: str | None = Field(default=None, repr=False)
    #: An OIDC provider whose access tokens are accepted as bearer tokens: its ``iss``, exactly.
    oidc_issuer: str | None = None
    #: The ``aud`` those tokens must carry (the broker's client ID): required with an issuer, so that
    #: a token the provider issued to another application is not accepted here.
    oidc_audience: str | None = Field(None, validate_default=True)
    #: Clock skew allowed on ``exp``, ``nbf`` and ``iat``.
    oidc_leeway_s: int = Field(5, ge=0, le=300)
    #: Anyone (even unauthenticated) may read any session and offer set.
    public_reads: bool = False
    jaeger_url: str = "http://localhost:16686"
    #: Signs the short-lived event-stream tokens (at least 32 bytes); unset, a random secret kept in
    #: ``<EB_DATA_DIR>/http-secret``.
    http_secret: str | None = Field(default=None, repr=False)
    event_token_ttl_s: int = 300
    #: Origins besides the broker's own (that of ``base_url()``) whose pages may write: a comma-separated
    #: list of ``scheme://host[:port]``. A write from any other origin is refused (403).
    http_allowed_origins: str = ""
    #: Failed HTTP Basic logins allowed per user name, and per client address, within the window;
    #: past either, attempts are answered 429 without checking the password.
    login_failures_per_user: int = Field(default=5, ge=1)
    login_failures_per_address: int = Field(default=20, ge=1)
    login_window_s: float = Field(default=60.0, gt=0)
    #: How long ``POST /sessions/{uuid}`` and ``POST /direct`` wait for the offers service's decision
    #: on an update (a cancel of an accepted session: for its end) before answering 504.
    http_update_timeout_s: float = Field(default=30.0, gt=0, le=600)

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer_url(cls, issuer: str | None) -> str | None:
        problem = url_problem(issuer, query_allowed=False) if issuer else None
        if problem is not None:
            raise ValueError(f"EB_OIDC_ISSUER {problem}")
        return issuer or None

    @field_validator("oidc_audience")
    @classmethod
    def _audience_with_issuer(cls, audience: str | None, info: ValidationInfo) -> str | None:
        # A field validator: its error quotes only this field's value, never another (a password).
        if info.data.get("oidc_issuer") and not (audience and audience.strip()):
            raise ValueError(
                "EB_OIDC_AUDIENCE must be set when EB_OIDC_ISSUER is: the client ID that the "
                "provider's access tokens for the broker carry in aud"
            )
        return audience

    @field_validator("http_allowed_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        parse_origins(value)  # a typo is an error at start-up, not a silent refusal of every write
        return value

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://127.0.0.1:{self.http_port or 8082}"
