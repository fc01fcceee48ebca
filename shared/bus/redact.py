"""A short excerpt of a message for a dead letter or a log line, with its secrets taken out.

A request carries the user's environment variables, and any message may carry a token: a dead
letter (which operators read, and which outlives the message) must keep neither. So the excerpt is
the message's JSON with the values of secret-looking keys replaced, any string shaped like a JWT or
an nkey seed replaced too, and the whole cut to a few hundred characters. A body that is not JSON
is cut shorter, after the same replacement of token-shaped words and ``key=value`` secrets.
"""

from __future__ import annotations

import json
import re
from typing import Any

REDACTED = "[redacted]"
#: What a dead letter keeps of a JSON body, and of a body that is not JSON.
JSON_EXCERPT_CHARS = 512
TEXT_EXCERPT_CHARS = 200
#: Only this much of a body is parsed: a larger one is cut as text (it is refused anyway).
MAX_PARSED_BYTES = 1024 * 1024
#: Keys whose values are secrets or may hold them (compared without case, ``-`` and ``_``).
SECRET_KEYS = frozenset(
    {
        "environment",
        "env",
        "password",
        "pass",
        "passwd",
        "secret",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "authorization",
        "credentials",
        "apikey",
        "cookie",
        "seed",
        "privatekey",
    }
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_NKEY_SEED = re.compile(r"\bS[UAONX][A-Z2-7]{56}\b")
_ASSIGNMENT = re.compile(
    r"(?i)\b(password|passwd|secret|token|api[_-]?key|authorization)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)


def _secret_key(key: str) -> bool:
    return key.lower().replace("-", "").replace("_", "") in SECRET_KEYS


def scrub_text(text: str) -> str:
    text = _JWT.sub(REDACTED, text)
    text = _NKEY_SEED.sub(REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _secret_key(k) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def excerpt(payload: bytes) -> str:
    """A short, redacted excerpt of `payload` (see the module docstring)."""
    if len(payload) <= MAX_PARSED_BYTES:
        try:
            scrubbed = _scrub(json.loads(payload))
            text = json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, RecursionError):  # not JSON, or nested too deep to walk: as text
            pass
        else:
            return _cut(text, JSON_EXCERPT_CHARS)
    head = payload[: TEXT_EXCERPT_CHARS * 4].decode("utf-8", "replace")
    return _cut(scrub_text(head), TEXT_EXCERPT_CHARS)
