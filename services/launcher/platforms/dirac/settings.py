"""Settings of the `dirac` platform: `EB_DIRAC_*` variables; keyword arguments take precedence."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.http.settings import HttpSettings


class DiracSettings(HttpSettings):
    model_config = SettingsConfigDict(env_prefix="EB_DIRAC_")
    label = "dirac platform"

    url: str = ""
    user: str = ""
    # Or EB_DIRAC_TOKEN_FILE, re-read whenever slurmrestd refuses the token (a renewer rewrites it).
    token: SecretStr | None = None
    partition: str = ""
    account: str = ""
    # Pin an API version (e.g. v0.0.42) instead of negotiating.
    api_version: str | None = None
    poll_s: float = 5.0
    # A folder on the cluster that exists; each session runs in <work_root>/<session_id>.
    work_root: str = "/tmp/execution-broker"
    apptainer: str = "apptainer"
    max_backoff_s: float = 10.0
    max_retry_after_s: float = 60.0
    preparation_estimate_s: float = 120.0
