"""What a client proves itself with on the bus, and the owner that proof makes it.

A user connects with the identity they use on HTTP: a local user name and password, or an OIDC
access token passed as the NATS token. The auth callout decides the owner from the verified
credential; the client must know the same owner beforehand, since its subjects and its private
reply inbox are named after it (`shared.auth.permissions`). For a password that is ``local:<user>``;
for a token it is read from the token's own ``iss`` and ``sub`` claims (unverified here: the server
verifies, and a client that lies to itself only gets refused).

An operator's tools (the embedded broker's own checks, the fault harness) connect with the
operator's nkey seed file instead, and name the owner they act for.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from shared.auth import owners
from shared.auth.permissions import inbox_prefix
from shared.bus.permissions import inbox_prefix as service_inbox


class CredentialsError(ValueError):
    """Credentials that cannot work; the message never holds the secret."""


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    #: An nkey seed file (``SU…``): the operator's and the services' identities.
    nkey_seed_file: Path | None = None
    #: With an nkey: the owner the operator's tools act for (they may act for anyone).
    acting_for: owners.Owner | None = None

    def __post_init__(self) -> None:
        kinds = [self.password is not None, self.token is not None, self.nkey_seed_file is not None]
        if sum(kinds) != 1:
            raise CredentialsError("give exactly one of a password (with a user), a token or an nkey seed")
        if self.password is not None and not self.user:
            raise CredentialsError("a password needs a user name")

    @classmethod
    def login(cls, user: str, password: str) -> Credentials:
        return cls(user=user, password=SecretStr(password))

    @property
    def owner(self) -> owners.Owner:
        """The owner the server will give this connection."""
        if self.password is not None:
            assert self.user is not None
            return owners.local(self.user)
        if self.token is not None:
            return _token_owner(self.token.get_secret_value())
        if self.acting_for is None:
            raise CredentialsError("an nkey login acts for no owner: set acting_for")
        return self.acting_for

    @property
    def inbox_prefix(self) -> str:
        """The private reply inbox: a user's is named after its owner; an nkey's after its seed file
        (``offers.nk``: ``_INBOX_offers``, what `shared.bus.permissions` allows each service)."""
        if self.nkey_seed_file is not None:
            return service_inbox(self.nkey_seed_file.stem)
        return inbox_prefix(self.owner.token)

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect``; nats-py keeps the secret in the connection."""
        options: dict[str, Any] = {"inbox_prefix": self.inbox_prefix}
        if self.password is not None:
            options["user"] = self.user
            options["password"] = self.password.get_secret_value()
        elif self.token is not None:
            options["token"] = self.token.get_secret_value()
        else:
            options["nkeys_seed"] = str(self.nkey_seed_file)
        return options

    def describe(self) -> str:
        """Who this is, for messages: never the secret."""
        if self.nkey_seed_file is not None:
            return f"the operator's key {self.nkey_seed_file}"
        if self.password is not None:
            return f"user {self.user}"
        return "an OIDC token"


def _token_owner(token: str) -> owners.Owner:
    """``oidc:<issuer hash>:<sub>`` from a JWT's payload (its signature is the server's business)."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > 16 * 1024:
        raise CredentialsError("the token is not a JWT (header.payload.signature)")
    body = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, binascii.Error):
        raise CredentialsError("the token's payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise CredentialsError("the token's payload is not a JSON object")
    issuer, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(issuer, str) or not isinstance(sub, str):
        raise CredentialsError("the token has no iss or sub claim")
    try:
        return owners.oidc(issuer, sub)
    except owners.OwnerError as exc:
        raise CredentialsError(str(exc)) from None
