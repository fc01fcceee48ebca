"""A fake of the identities the auth callout asks about: local users with passwords, and bearer
tokens standing for OIDC identities (issuer, sub, expiry), as a real OIDC verifier would report
them after checking a token's signature, issuer and audience."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from pydantic import SecretStr

from shared.auth import owners
from shared.auth.callout import Admit, Decision, Refuse

ISSUER = "https://idp.example.org/realms/science"


@dataclass
class FakeIdentities:
    passwords: dict[str, str] = field(default_factory=dict)
    #: token -> (sub, exp in Unix seconds), all of `ISSUER`
    tokens: dict[str, tuple[str, int]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    async def password(self, username: str, password: SecretStr) -> Decision:
        self.asked.append(f"password:{username}")
        stored = self.passwords.get(username)
        if stored is None or not hmac.compare_digest(stored, password.get_secret_value()):
            return Refuse("unknown user or wrong password")
        return Admit(owners.local(username))

    async def token(self, token: SecretStr) -> Decision:
        self.asked.append("token")
        found = self.tokens.get(token.get_secret_value())
        if found is None:
            return Refuse("the token is not valid")
        sub, expires = found
        return Admit(owners.oidc(ISSUER, sub), expires=expires)
