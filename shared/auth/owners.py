"""Owners: who a session belongs to, namespaced by where the identity comes from, as one subject token.

An owner is ``local:<username>`` (the broker's own users) or ``oidc:<issuer hash>:<sub>`` (an OIDC
provider's stable subject identifier). Two providers, or a provider and the local table, can never
produce the same owner: the namespace and the issuer are part of it. ``preferred_username`` is never
an owner, since any provider's user may choose one equal to someone else's name.

The owner reaches NATS as the owner token of every subject it may use, so it is escaped into one
token of ``[A-Za-z0-9_\\-=@]+`` (`shared.subjects.is_token`) by a prefix-free code over its UTF-8
bytes: a safe byte stands for itself, ``:`` is ``==``, any other byte is ``=`` and two upper-case
hex digits. No code word is a prefix of another, so the code is injective and `from_token` reverses
it; only the canonical spelling is accepted, so token and owner correspond one to one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from shared.subjects import is_token

#: Issuer hashes are 16 hex digits (64 bits of SHA-256): the issuers are the few an operator
#: configures, so this only has to tell them apart, and it keeps subjects short.
ISSUER_HASH_CHARS = 16
MAX_USERNAME_CHARS = 64
#: OpenID Connect Core §2: ``sub`` is at most 255 ASCII characters.
MAX_SUB_CHARS = 255
#: A protocol line holds at most 4096 bytes by default (max_control_line), and the longest carries
#: the token twice: a consumer create subject with an owner filter, and its reply inbox. Every
#: local name and every ASCII ``sub`` fits; a long non-ASCII ``sub`` may not, and is refused.
MAX_TOKEN_CHARS = 1024

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-@")
_COLON = ord(":")
_ESCAPE = "="
_HEX = re.compile(r"[0-9A-F]{2}")
_ISSUER_HASH = re.compile(rf"[0-9a-f]{{{ISSUER_HASH_CHARS}}}")


class OwnerError(ValueError):
    """Not an owner (or not an owner's token). The message names the rule, never a credential."""


class Source(StrEnum):
    LOCAL = "local"
    OIDC = "oidc"


def escape(text: str) -> str:
    """The token for `text` (see the module docstring); the empty string maps to the empty string."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise OwnerError("an owner must be valid Unicode text (no lone surrogates)") from None
    out: list[str] = []
    for byte in raw:
        if byte in _SAFE:
            out.append(chr(byte))
        elif byte == _COLON:
            out.append(_ESCAPE * 2)
        else:
            out.append(f"{_ESCAPE}{byte:02X}")
    return "".join(out)


def unescape(token: str) -> str:
    """The text whose `escape` is `token`; anything else (a non-canonical spelling too) is refused."""
    raw = bytearray()
    i = 0
    while i < len(token):
        char = token[i]
        if char != _ESCAPE:
            if ord(char) > 0x7F or ord(char) not in _SAFE:
                raise OwnerError(f"character {i} of an owner token is not a token character")
            raw.append(ord(char))
            i += 1
        elif token[i + 1 : i + 2] == _ESCAPE:
            raw.append(_COLON)
            i += 2
        else:
            digits = token[i + 1 : i + 3]
            if not _HEX.fullmatch(digits):
                raise OwnerError(f"'=' at {i} of an owner token is not followed by '=' or two hex digits")
            byte = int(digits, 16)
            if byte in _SAFE or byte == _COLON:
                raise OwnerError(f"the escape at {i} of an owner token is not the canonical spelling")
            raw.append(byte)
            i += 3
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise OwnerError("an owner token does not decode to UTF-8 text") from None


def issuer_hash(issuer: str) -> str:
    """The short, stable name of an OIDC issuer (its exact ``iss`` string) inside owners."""
    return hashlib.sha256(issuer.encode("utf-8")).hexdigest()[:ISSUER_HASH_CHARS]


def _check_name(value: str, what: str, limit: int) -> None:
    if not value:
        raise OwnerError(f"{what} must not be empty")
    if len(value) > limit:
        raise OwnerError(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise OwnerError(f"{what} must not contain control characters")


@dataclass(frozen=True)
class Owner:
    """``name`` is the local username or the OIDC ``sub``; ``issuer`` the issuer hash (OIDC only)."""

    source: Source
    name: str
    issuer: str | None = None
    _token: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source is Source.LOCAL:
            _check_name(self.name, "a username", MAX_USERNAME_CHARS)
            if self.issuer is not None:
                raise OwnerError("a local owner has no issuer")
        else:
            _check_name(self.name, "an OIDC sub", MAX_SUB_CHARS)
            if self.issuer is None or not _ISSUER_HASH.fullmatch(self.issuer):
                raise OwnerError(f"an OIDC owner needs an issuer hash of {ISSUER_HASH_CHARS} hex digits")
        token = escape(str(self))
        if len(token) > MAX_TOKEN_CHARS:
            raise OwnerError(f"the owner is longer than {MAX_TOKEN_CHARS} characters as a subject token")
        object.__setattr__(self, "_token", token)

    def __str__(self) -> str:
        if self.issuer is None:
            return f"{self.source}:{self.name}"
        return f"{self.source}:{self.issuer}:{self.name}"

    @property
    def token(self) -> str:
        """The owner as one subject token (computed and checked once, at construction)."""
        return self._token


def local(username: str) -> Owner:
    return Owner(Source.LOCAL, username)


def oidc(issuer: str, sub: str) -> Owner:
    """The owner of an OIDC identity: pass the *verified* ``iss`` and ``sub`` claims."""
    return Owner(Source.OIDC, sub, issuer_hash(issuer))


def parse(owner: str) -> Owner:
    """``local:<username>`` or ``oidc:<issuer hash>:<sub>`` back into an `Owner`."""
    source, sep, rest = owner.partition(":")
    if not sep:
        raise OwnerError("an owner is <source>:<name>")
    if source == Source.LOCAL:
        return Owner(Source.LOCAL, rest)
    if source == Source.OIDC:
        issuer, sep, sub = rest.partition(":")
        if not sep:
            raise OwnerError("an OIDC owner is oidc:<issuer hash>:<sub>")
        return Owner(Source.OIDC, sub, issuer)
    raise OwnerError(f"an owner's source is one of {', '.join(s.value for s in Source)}")


def from_token(token: str) -> Owner:
    """The owner a subject token stands for (refuses any token no owner produces)."""
    if len(token) > MAX_TOKEN_CHARS or not is_token(token):
        raise OwnerError("not an owner token")
    return parse(unescape(token))
