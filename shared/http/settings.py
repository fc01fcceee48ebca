"""The HTTP fields of every client's settings: a timeout per request and the retry policy."""

from __future__ import annotations

from pydantic import Field

from shared.http.retry import RetryPolicy
from shared.secret_settings import SecretSettings


class HttpSettings(SecretSettings):
    """A subclass sets `env_prefix` and may change these defaults by declaring the field again."""

    timeout_s: float = Field(30.0, gt=0)  # one request
    attempts: int = Field(5, ge=1)  # per call, the first included
    backoff_s: float = Field(0.5, ge=0)  # the first wait; doubles, jittered, up to max_backoff_s
    max_backoff_s: float = Field(30.0, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0)  # a longer Retry-After ends the call at once
    budget_s: float = Field(120.0, gt=0)  # one call, waits included (plus at most one timeout)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.attempts,
            backoff_s=self.backoff_s,
            max_backoff_s=self.max_backoff_s,
            budget_s=self.budget_s,
            max_retry_after_s=self.max_retry_after_s,
        )
