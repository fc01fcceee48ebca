"""Password hashes of local identities: Argon2id for every new hash (pwdlib over argon2-cffi), and
the scrypt hashes the broker wrote before (``scrypt$N$r$p$salt$digest``) still verified, so an old
data directory keeps working; a login with an old hash is answered with an Argon2id one to store.

Why pwdlib: it is the maintained successor of passlib's API for this job (identify the scheme of a
stored hash, verify, say when to rehash), and Argon2id's parameters come from argon2-cffi's
RFC 9106 profile instead of numbers of ours.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

#: What a password may be: anything printable a person types, not a megabyte that the hash would
#: chew through for every guess.
MAX_PASSWORD_BYTES = 1024
_SCRYPT_PREFIX = "scrypt$"


class LegacyScrypt:
    """Verify-only: the broker's scrypt hashes of before issue 12. It never hashes anew."""

    @classmethod
    def identify(cls, hash: str | bytes) -> bool:
        text = hash.decode("ascii", "replace") if isinstance(hash, bytes) else hash
        return text.startswith(_SCRYPT_PREFIX)

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        raise NotImplementedError("scrypt hashes are only verified; new hashes are Argon2id")

    def verify(self, password: str | bytes, hash: str | bytes) -> bool:
        text = hash.decode("ascii", "replace") if isinstance(hash, bytes) else hash
        secret = password.encode("utf-8") if isinstance(password, str) else password
        try:
            _, n, r, p, salt, digest = text.split("$")
            expected = base64.b64decode(digest, validate=True)
            actual = hashlib.scrypt(
                secret,
                salt=base64.b64decode(salt, validate=True),
                n=int(n),
                r=int(r),
                p=int(p),
                dklen=len(expected),
                maxmem=64 * 1024 * 1024,
            )
        except (ValueError, binascii.Error):
            return False
        return hmac.compare_digest(actual, expected)

    def check_needs_rehash(self, hash: str | bytes) -> bool:
        return True


#: The first hasher hashes; the others only verify (and ask for a rehash).
HASHER = PasswordHash((Argon2Hasher(), LegacyScrypt()))


def hash_password(password: str) -> str:
    check_password_length(password)
    return HASHER.hash(password)


def verify_password(password: str, stored: str) -> tuple[bool, str | None]:
    """Whether `password` matches `stored`, and the hash to store instead (None: keep it)."""
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        return False, None
    try:
        return HASHER.verify_and_update(password, stored)
    except Exception:  # an unknown or damaged hash verifies nothing
        return False, None


def check_password_length(password: str) -> None:
    if not password:
        raise ValueError("a password must not be empty")
    if len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD_BYTES:
        raise ValueError(f"a password must be at most {MAX_PASSWORD_BYTES} bytes")


#: Verified against when the user name is unknown, so that a probe takes as long as a real check.
DUMMY_HASH = HASHER.hash("no identity has this password")
