"""How one API's answers are read: which failures are retried, and how they are worded.

Each client states its rules once (a `RetryRules`, or a subclass where the status alone does not
tell, as with slurmrestd's error numbers); the HTTP layer applies them to every attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

# RFC 9110 defines Retry-After for these (and 3xx, which are not retried).
RETRY_AFTER_STATUSES = frozenset({429, 503})


def first_line(text: str, limit: int = 300) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:limit] if stripped else ""


@dataclass(frozen=True)
class RetryRules:
    #: Answers worth another attempt.
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})
    #: Of those, the ones after which a request that is not idempotent (a create) may be resent:
    #: the server surely did not act on it. Others raise `InDoubt`.
    unprocessed_statuses: frozenset[int] = frozenset({429, 503})
    #: Answers that refuse the credentials: a token file is re-read and the request resent, once.
    auth_statuses: frozenset[int] = frozenset({401})

    def retryable(self, response: httpx.Response) -> bool:
        return response.status_code in self.retry_statuses

    def unprocessed(self, response: httpx.Response) -> bool:
        return response.status_code in self.unprocessed_statuses

    def auth_refused(self, response: httpx.Response) -> bool:
        return response.status_code in self.auth_statuses

    def status_reason(self, response: httpx.Response) -> str:
        """A failed answer in a few words, for messages (the layer redacts the token from it)."""
        return f"HTTP {response.status_code} {first_line(response.text, 200)}".strip()

    def timeout_reason(self, timeout_s: float | None) -> str:
        return f"no answer within {timeout_s:g} s" if timeout_s is not None else "no answer"

    def span_attributes(self, response: httpx.Response) -> Mapping[str, str | int | list[int]]:
        """Attributes that this API's answers add to the request's span."""
        return {}
