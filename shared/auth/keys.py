"""NATS nkeys: the public-key text form, Ed25519 signing keys and the curve (``X``) keys of xkey.

PyPI ``nkeys`` signs with seeds, but has no key generator, no check of a *public* key (verifying
the server's signature needs one), and no curve keys; this module adds those on PyNaCl, the library
``nkeys`` itself uses. Text form: base32 without padding of one prefix byte, the 32-byte key and a
little-endian CRC-16 (XMODEM) of both; a seed has two prefix bytes (``S`` and the role).
"""

from __future__ import annotations

import base64
import binascii
import os
from enum import IntEnum

import nacl.exceptions
import nacl.public
import nacl.signing
import nkeys
from pydantic import SecretStr

_SEED = 18 << 3
_KEY_BYTES = 32
#: The xkey wire format: this version tag, a 24-byte nonce, then the NaCl box.
XKEY_VERSION = b"xkv1"
_NONCE_BYTES = nacl.public.Box.NONCE_SIZE


class NkeyError(ValueError):
    """A key in the wrong form or of the wrong role. The message never contains a seed."""


class Role(IntEnum):
    """The prefix byte of each role's public key (its first base32 character in the comment)."""

    ACCOUNT = 0  # A
    SERVER = 13 << 3  # N
    USER = 20 << 3  # U
    CURVE = 23 << 3  # X


def _crc(data: bytes) -> bytes:
    return int(nkeys.crc16(bytearray(data))).to_bytes(2, "little")


def _b32decode(text: str) -> bytes:
    if not text.isascii() or not text.isalnum() or not text.isupper():
        raise NkeyError("a key is upper-case base32 text")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error:
        raise NkeyError("a key is upper-case base32 text") from None


def encode_public(role: Role, raw: bytes) -> str:
    if len(raw) != _KEY_BYTES:
        raise NkeyError(f"a public key has {_KEY_BYTES} bytes")
    body = bytes([role]) + raw
    return base64.b32encode(body + _crc(body)).decode("ascii").rstrip("=")


def decode_public(text: str, role: Role) -> bytes:
    """The 32 key bytes of a public key of `role`, after checking its length, prefix and CRC."""
    raw = _b32decode(text) if len(text) == 56 else b""
    if len(raw) != 1 + _KEY_BYTES + 2 or raw[0] != role or _crc(raw[:-2]) != raw[-2:]:
        raise NkeyError(f"not a {role.name.lower()} public key")
    return raw[1:-2]


def is_public(text: str, role: Role) -> bool:
    try:
        decode_public(text, role)
    except NkeyError:
        return False
    return True


def encode_seed(role: Role, raw: bytes) -> SecretStr:
    if len(raw) != _KEY_BYTES:
        raise NkeyError(f"a seed has {_KEY_BYTES} bytes")
    body = bytes([_SEED | role >> 5, (role & 31) << 3]) + raw
    return SecretStr(base64.b32encode(body + _crc(body)).decode("ascii").rstrip("="))


def decode_seed(seed: SecretStr, role: Role) -> bytes:
    raw = _b32decode(seed.get_secret_value())
    if (
        len(raw) != 2 + _KEY_BYTES + 2
        or raw[0] & 0xF8 != _SEED
        or ((raw[0] & 7) << 5 | raw[1] >> 3) != role
        or _crc(raw[:-2]) != raw[-2:]
    ):
        raise NkeyError(f"not a {role.name.lower()} seed")
    return raw[2:-2]


def new_seed(role: Role) -> SecretStr:
    """A fresh random seed of `role` (for the embedded default's keys, and for tests)."""
    return encode_seed(role, os.urandom(_KEY_BYTES))


class Signer:
    """An Ed25519 nkey that signs (an account key signs callout responses and user JWTs)."""

    def __init__(self, seed: SecretStr, role: Role) -> None:
        self._key = nacl.signing.SigningKey(decode_seed(seed, role))
        self.public_key = encode_public(role, bytes(self._key.verify_key))

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data).signature)

    def __repr__(self) -> str:
        return f"Signer({self.public_key})"


def verify(public_key: str, role: Role, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is the Ed25519 signature of `data` by the key `public_key` of `role`."""
    try:
        nacl.signing.VerifyKey(decode_public(public_key, role)).verify(data, signature)
    except (NkeyError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


class CurveKey:
    """Our curve key for xkey: open what nats-server sealed to us, seal the answer to its key."""

    def __init__(self, seed: SecretStr) -> None:
        self._key = nacl.public.PrivateKey(decode_seed(seed, Role.CURVE))
        self.public_key = encode_public(Role.CURVE, bytes(self._key.public_key))

    def _box(self, peer: str) -> nacl.public.Box:
        return nacl.public.Box(self._key, nacl.public.PublicKey(decode_public(peer, Role.CURVE)))

    def open(self, sealed: bytes, peer: str) -> bytes:
        if not sealed.startswith(XKEY_VERSION) or len(sealed) < len(XKEY_VERSION) + _NONCE_BYTES:
            raise NkeyError("not an xkey message")
        start = len(XKEY_VERSION)
        nonce, box = sealed[start : start + _NONCE_BYTES], sealed[start + _NONCE_BYTES :]
        try:
            return bytes(self._box(peer).decrypt(box, nonce))
        except nacl.exceptions.CryptoError:
            raise NkeyError("an xkey message that does not open with our key") from None

    def seal(self, data: bytes, peer: str) -> bytes:
        # PyNaCl puts the random nonce before the box, as the xkey format wants.
        return XKEY_VERSION + bytes(self._box(peer).encrypt(data))

    def __repr__(self) -> str:
        return f"CurveKey({self.public_key})"
