"""The JWTs of a config-mode auth callout: the server's authorization request (decoded and
verified) and our user JWT and authorization response (encoded and signed).

NATS JWTs are ordinary JWS compact serialisations with the header
``{"typ":"JWT","alg":"ed25519-nkey"}``: base64url without padding of the header and of the JSON
claims, and of the Ed25519 signature of ``header.claims`` by an nkey. PyJWT has no such algorithm,
so this module writes them by hand (reference: nats-io/jwt v2, see
reference/platform-and-bus-notes-2.md §1). Pure apart from the signature.

A request is checked in two stages. Its envelope (size, header, signature by the server key in
``iss``, audience, subject, expiry, type, version, the one-time user key) says where an answer
goes: if it fails, there is nobody to answer, and `RequestError` is raised. The client's fields
(``client_info``, ``connect_opts``) are what a client chose; if they are malformed the request is
still answered, with a refusal (`AuthRequest.problem`).

The server's key is its own (``server_id.id``, new at every start in config mode), so the signature
proves integrity and that the request names its signer, not who that is: the trust is that only
nats-server can publish on ``$SYS.REQ.USER.AUTH`` (the callout account's users are denied it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from shared.auth.keys import Role, Signer, is_public, verify
from shared.auth.permissions import Permissions

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
REQUEST_AUDIENCE = "nats-authorization-request"
#: A request holds the client's connect options and, with TLS, its certificate chains: a few KiB.
MAX_REQUEST_CHARS = 64 * 1024
MAX_SHORT_CHARS = 256
MAX_PASSWORD_CHARS = 1024
#: An OIDC access token with many claims (groups, scopes) can run to several KiB.
MAX_TOKEN_CHARS = 16 * 1024
MAX_ERROR_CHARS = 256
#: Seconds of clock difference tolerated between nats-server and us.
LEEWAY_S = 5

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
Short = Annotated[str, StringConstraints(max_length=MAX_SHORT_CHARS)]


class RequestError(ValueError):
    """A request with no verifiable envelope: refused without an answer. Never holds a secret."""


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")


class _ServerId(_Strict):
    id: Short
    name: Short = ""
    xkey: Short = ""


class _EnvelopeNats(_Strict):
    type: Literal["authorization_request"]
    version: Literal[2]
    user_nkey: Short
    server_id: _ServerId


class _Envelope(_Strict):
    iss: Short
    sub: Short
    aud: Short
    exp: int = Field(gt=0, lt=2**53)
    nats: _EnvelopeNats


#: ``client_info.kind`` of a leaf node's connection (nats-server's name for it, lower-cased).
LEAF_KIND = "leafnode"


class _ClientInfo(_Strict):
    model_config = ConfigDict(title="client_info")
    host: Short = ""
    id: int = Field(0, ge=0, lt=2**64)
    user: Short = ""
    name: Short = ""
    kind: Short = ""
    type: Short = ""


class _ConnectOpts(_Strict):
    model_config = ConfigDict(title="connect_opts")
    jwt: str = Field("", max_length=MAX_TOKEN_CHARS)
    nkey: Short = ""
    sig: Short = ""
    auth_token: SecretStr = Field(SecretStr(""), max_length=MAX_TOKEN_CHARS)
    user: Short = ""
    password: SecretStr = Field(SecretStr(""), alias="pass", max_length=MAX_PASSWORD_CHARS)
    name: Short = ""
    lang: Short = ""
    version: Short = ""
    protocol: int = Field(0, ge=0, lt=2**31)


@dataclass(frozen=True)
class Password:
    user: str
    password: SecretStr


@dataclass(frozen=True)
class Token:
    token: SecretStr


Credentials = Password | Token


@dataclass(frozen=True)
class AuthRequest:
    """A verified request. ``problem`` (a reason for the refusal) is set when the client's fields
    are unusable; otherwise ``credentials`` holds what the client presented."""

    server_id: str
    server_xkey: str
    user_nkey: str
    client_host: str
    credentials: Credentials | None
    problem: str | None


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Strict base64url without padding: any other character, or padding, is refused."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url without padding")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except binascii.Error:
        raise ValueError("not base64url without padding") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise RequestError(f"the {what} is not JSON") from None
    if not isinstance(value, dict):
        raise RequestError(f"the {what} is not a JSON object")
    return value


def _errors(exc: ValidationError) -> str:
    """Where a validation failed and why, without the values (a value may be a secret)."""
    first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "(root)"
    return f"{where}: {first['type']}"


def decode_request(token: str, *, issuer: str, now: int) -> AuthRequest:
    """Verify an authorization request JWT from nats-server for callout `issuer` (an account key)."""
    if len(token) > MAX_REQUEST_CHARS:
        raise RequestError(f"the request is longer than {MAX_REQUEST_CHARS} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise RequestError("the request is not a JWT (three dot-separated parts)")
    try:
        header_raw, payload_raw, signature = (unb64url(part) for part in parts)
    except ValueError:
        raise RequestError("a part of the request is not base64url") from None
    header = _json_object(header_raw, "JWT header")
    if str(header.get("typ", "")).upper() != "JWT" or header.get("alg") != HEADER["alg"]:
        raise RequestError("the request's JWT header is not typ JWT, alg ed25519-nkey")
    claims = _json_object(payload_raw, "request claims")
    try:
        envelope = _Envelope.model_validate(claims)
    except ValidationError as exc:
        raise RequestError(f"malformed request: {_errors(exc)}") from None
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not verify(envelope.iss, Role.SERVER, signing_input, signature):
        raise RequestError("the request is not signed by the server key it names")
    server = envelope.nats.server_id
    if envelope.iss != server.id:
        raise RequestError("the request's issuer is not the server it comes from")
    if envelope.aud != REQUEST_AUDIENCE:
        raise RequestError(f"the request's audience is not {REQUEST_AUDIENCE}")
    if envelope.sub != issuer:
        raise RequestError("the request is for another callout issuer")
    if envelope.exp + LEEWAY_S < now:
        raise RequestError("the request has expired")
    if not is_public(envelope.nats.user_nkey, Role.USER):
        raise RequestError("the request's user_nkey is not a user public key")
    if server.xkey and not is_public(server.xkey, Role.CURVE):
        raise RequestError("the request's server xkey is not a curve public key")

    credentials: Credentials | None = None
    problem: str | None = None
    client = _ClientInfo()
    fields: dict[str, Any] = claims["nats"]  # a JSON object: the envelope validated it
    try:
        client = _ClientInfo.model_validate(fields.get("client_info", {}))
        opts = _ConnectOpts.model_validate(fields.get("connect_opts", {}))
    except ValidationError as exc:
        problem = f"malformed client field {exc.title}.{_errors(exc)}"
    else:
        credentials, problem = _credentials(opts)
        if client.kind.lower() == LEAF_KIND:
            # People log in; servers do not: a site's leaf node connects with its own key, which
            # never reaches the callout (docs/security.md "Sites").
            credentials, problem = None, "a leaf node connects with a site key (broker site-key), not a login"
    return AuthRequest(
        server_id=server.id,
        server_xkey=server.xkey,
        user_nkey=envelope.nats.user_nkey,
        client_host=client.host,
        credentials=credentials,
        problem=problem,
    )


def _credentials(opts: _ConnectOpts) -> tuple[Credentials | None, str | None]:
    """Exactly one of a token or a user and password; a user JWT or nkey is not for the callout."""
    token = opts.auth_token.get_secret_value()
    password = opts.password.get_secret_value()
    if opts.jwt or opts.nkey or opts.sig:
        return None, "user JWT and nkey logins are not accepted here"
    if token and (opts.user or password):
        return None, "both a token and a user/password were given"
    if token:
        return Token(opts.auth_token), None
    if opts.user and password:
        return Password(opts.user, opts.password), None
    if opts.user or password:
        return None, "a user needs both a name and a password"
    return None, "no credentials"


def encode(claims: dict[str, Any], signer: Signer) -> str:
    """A signed NATS JWT; its ``jti`` is a hash of the other claims, as nats-io/jwt makes it."""
    body = {**claims, "iss": signer.public_key}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode("ascii").rstrip("=")
    signing_input = ".".join(
        b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (HEADER, body)
    )
    return f"{signing_input}.{b64url(signer.sign(signing_input.encode('ascii')))}"


def user_jwt(
    *,
    signer: Signer,
    user_nkey: str,
    account: str,
    name: str,
    permissions: Permissions,
    now: int,
    expires: int,
) -> str:
    """The user the server admits: in config mode ``aud`` names the account it lands in, and the
    server closes the connection at ``exp``."""
    if expires <= now:
        raise ValueError("a user JWT must expire after it is issued")
    return encode(
        {
            "sub": user_nkey,
            "aud": account,
            "name": name,
            "iat": now,
            "exp": expires,
            "nats": {**permissions.claims(), "type": "user", "version": 2},
        },
        signer,
    )


def authorization_response(
    *,
    signer: Signer,
    request: AuthRequest,
    now: int,
    user: str | None = None,
    error: str | None = None,
) -> str:
    """The answer to `request`: a user JWT, or an error the server logs (never a secret in it)."""
    if (user is None) == (error is None):
        raise ValueError("an authorization response holds exactly one of a user JWT or an error")
    outcome = {"jwt": user} if user is not None else {"error": (error or "")[:MAX_ERROR_CHARS]}
    return encode(
        {
            "sub": request.user_nkey,
            "aud": request.server_id,
            "iat": now,
            "nats": {**outcome, "type": "authorization_response", "version": 2},
        },
        signer,
    )
