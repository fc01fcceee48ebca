"""The nats-server side of an auth callout, for unit tests: authorization requests as the server
signs (and seals) them, and the reading of the answers. Shapes from reference/platform-and-bus-
notes-2.md §1 (observed on nats-server 2.15.1)."""

from __future__ import annotations

import base64
import json
from typing import Any

from shared.auth import jwt
from shared.auth.keys import CurveKey, Role, Signer, encode_public, new_seed, verify


def claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT, after checking that `iss` signed it (any role: the prefix says which)."""
    header, payload, signature = token.split(".")
    claims: dict[str, Any] = json.loads(jwt.unb64url(payload))
    role = {"A": Role.ACCOUNT, "N": Role.SERVER, "U": Role.USER}[claims["iss"][0]]
    assert json.loads(jwt.unb64url(header)) == jwt.HEADER
    assert verify(claims["iss"], role, f"{header}.{payload}".encode(), jwt.unb64url(signature))
    return claims


def sign(claims: dict[str, Any], signer: Signer, header: dict[str, Any] | None = None) -> str:
    """Any claims, signed as the server would (no ``jti`` or ``iss`` added: the caller's own)."""
    parts = [
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
        for part in (header or jwt.HEADER, claims)
    ]
    signing_input = ".".join(parts)
    return f"{signing_input}.{jwt.b64url(signer.sign(signing_input.encode()))}"


class FakeAuthServer:
    def __init__(self, issuer: str, callout_xkey: str | None = None) -> None:
        self.signer = Signer(new_seed(Role.SERVER), Role.SERVER)
        self.user_nkey = encode_public(Role.USER, bytes(32))
        self.issuer = issuer
        self.callout_xkey = callout_xkey
        self.curve = CurveKey(new_seed(Role.CURVE)) if callout_xkey else None

    def claims(self, connect_opts: dict[str, Any], now: int) -> dict[str, Any]:
        return {
            "jti": "J",
            "iat": now,
            "iss": self.signer.public_key,
            "sub": self.issuer,
            "aud": jwt.REQUEST_AUDIENCE,
            "exp": now + 2,
            "nats": {
                "server_id": {
                    "name": "n1",
                    "host": "127.0.0.1",
                    "id": self.signer.public_key,
                    "version": "2.15.1",
                    "xkey": self.curve.public_key if self.curve else "",
                },
                "user_nkey": self.user_nkey,
                "client_info": {"host": "192.0.2.7", "id": 5, "user": "alice", "kind": "Client"},
                "connect_opts": {"lang": "python3", "version": "2.16.0", "protocol": 1, **connect_opts},
                "type": "authorization_request",
                "version": 2,
            },
        }

    def seal(self, token: str) -> tuple[bytes, str | None]:
        """The message body and the ``Nats-Server-Xkey`` header, as the server sends a request."""
        if self.curve is None or self.callout_xkey is None:
            return token.encode(), None
        return self.curve.seal(token.encode(), self.callout_xkey), self.curve.public_key

    def request(self, connect_opts: dict[str, Any], now: int) -> tuple[bytes, str | None]:
        return self.seal(sign(self.claims(connect_opts, now), self.signer))

    def read(self, reply: bytes) -> dict[str, Any]:
        """The ``nats`` claim of a response (checked: for our user key and this server)."""
        if self.curve is not None and self.callout_xkey is not None:
            reply = self.curve.open(reply, self.callout_xkey)
        claims = claims_of(reply.decode())
        assert claims["sub"] == self.user_nkey and claims["aud"] == self.signer.public_key
        nats: dict[str, Any] = claims["nats"]
        assert nats["type"] == "authorization_response" and nats["version"] == 2
        return nats
