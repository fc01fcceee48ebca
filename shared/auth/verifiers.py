"""The callout's answers from the identity sources: each turns a credential into `Admit` or `Refuse`.

`OidcTokens.token` is a `shared.auth.callout.Verifier`'s token check: a bearer token passed as the
NATS token (``nats.connect(token=…)``) is an OIDC access token, verified by `OidcVerifier`; its
owner is ``owners.oidc(iss, sub)`` and the connection lasts until the token's ``exp`` (the callout
puts it in the user JWT, and nats-server closes the connection then).
"""

from __future__ import annotations

from pydantic import SecretStr

from shared.auth.callout import Admit, Decision, Refuse
from shared.auth.oidc import OidcError, OidcVerifier


class OidcTokens:
    def __init__(self, verifier: OidcVerifier) -> None:
        self._verifier = verifier

    async def token(self, token: SecretStr) -> Decision:
        try:
            identity = await self._verifier.verify(token.get_secret_value())
        except OidcError as exc:  # a fixed reason, never the token
            return Refuse(str(exc))
        return Admit(identity.owner, expires=identity.expires)
