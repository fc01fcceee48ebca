"""Failed HTTP Basic logins, counted per user name and per client address, to stop password guessing.

After ``per_user`` failures for one user name, or ``per_address`` from one address, within
``window_s`` seconds, further attempts are refused (429) until the oldest of those failures leaves the
window, and the password is not checked at all: a refusal costs no scrypt hash, so guessing costs the
server no CPU either.

An attempt counts as a failure from the moment it starts until it verifies (``begin`` reserves it), so
a burst of concurrent guesses cannot slip past the count while their hashes run. A success forgives
only the failures of that same user name from that same address: a user's own typos, never an
attacker's guesses from elsewhere, nor what the address tried against other names.

Pure: the caller passes the clock reading (``now``). Memory is bounded: at most ``max_keys`` user
names and as many addresses are remembered (the least recently seen go first), each with at most its
limit of failures, and user names are kept only as digests (one may be a password typed in the
wrong field).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TypeVar

_Key = TypeVar("_Key", bytes, str)


@dataclass(frozen=True)
class Attempt:
    """A login attempt under way: what ``failed``, ``succeeded`` or ``abandoned`` settle."""

    user: bytes | None
    address: str


@dataclass(frozen=True)
class Refused:
    retry_after_s: int
    #: "for this user name" or "from this address"
    reason: str


@dataclass
class _Record:
    #: The newest failures: (when, the other key of the attempt: its address, or its user digest).
    failures: deque[tuple[float, object]]
    in_flight: int = 0

    def release(self) -> None:
        # Never below zero: the record may have been forgotten and made anew while the attempt ran.
        self.in_flight = max(0, self.in_flight - 1)

    def idle(self) -> bool:
        return not self.failures and self.in_flight == 0


@dataclass
class LoginLimiter:
    per_user: int = 5
    per_address: int = 20
    window_s: float = 60.0
    max_keys: int = 10_000
    _users: OrderedDict[bytes, _Record] = field(default_factory=OrderedDict, init=False, repr=False)
    _addresses: OrderedDict[str, _Record] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.per_user < 1 or self.per_address < 1 or self.window_s <= 0 or self.max_keys < 1:
            raise ValueError("login limits must be positive")

    def begin(self, user: str, address: str, now: float) -> Attempt | Refused:
        """An attempt of ``user`` (empty when the credentials name none) from ``address``, or why not."""
        user_key = _digest(user) if user else None
        waits = []
        if user_key is not None:
            wait = self._wait(self._users, user_key, self.per_user, now)
            if wait is not None:
                waits.append((wait, "for this user name"))
        wait = self._wait(self._addresses, address, self.per_address, now)
        if wait is not None:
            waits.append((wait, "from this address"))
        if waits:
            seconds, reason = max(waits)
            return Refused(max(1, math.ceil(seconds)), reason)
        if user_key is not None:
            self._record(self._users, user_key, self.per_user).in_flight += 1
        self._record(self._addresses, address, self.per_address).in_flight += 1
        return Attempt(user_key, address)

    def failed(self, attempt: Attempt, now: float) -> None:
        if attempt.user is not None:
            record = self._record(self._users, attempt.user, self.per_user)
            record.release()
            record.failures.append((now, attempt.address))
        record = self._record(self._addresses, attempt.address, self.per_address)
        record.release()
        record.failures.append((now, attempt.user))

    def succeeded(self, attempt: Attempt) -> None:
        """Forget the failures of this user name from this address (and only those)."""
        if attempt.user is not None:
            self._settle(self._users, attempt.user, forget=attempt.address)
        self._settle(self._addresses, attempt.address, forget=attempt.user)

    def abandoned(self, attempt: Attempt) -> None:
        """Neither verified nor refused (the check itself broke): it counts for nothing."""
        if attempt.user is not None:
            self._settle(self._users, attempt.user, forget=None)
        self._settle(self._addresses, attempt.address, forget=None)

    def remembered(self) -> tuple[int, int]:
        """How many user names and addresses are remembered (for the tests of the bound)."""
        return len(self._users), len(self._addresses)

    # -- the records ---------------------------------------------------------------------------------

    def _wait(self, records: OrderedDict[_Key, _Record], key: _Key, limit: int, now: float) -> float | None:
        """Seconds until ``key`` may try again, None if it may now."""
        record = records.get(key)
        if record is None:
            return None
        while record.failures and record.failures[0][0] <= now - self.window_s:
            record.failures.popleft()
        if record.idle():
            del records[key]
            return None
        if len(record.failures) >= limit:
            return record.failures[0][0] + self.window_s - now
        if len(record.failures) + record.in_flight >= limit:
            return 1.0  # attempts under way fill the limit; they settle in well under a second
        return None

    def _record(self, records: OrderedDict[_Key, _Record], key: _Key, limit: int) -> _Record:
        record = records.get(key)
        if record is None:
            record = records[key] = _Record(deque(maxlen=limit))
            while len(records) > self.max_keys:
                records.popitem(last=False)
        else:
            records.move_to_end(key)
        return record

    def _settle(self, records: OrderedDict[_Key, _Record], key: _Key, forget: object) -> None:
        record = records.get(key)
        if record is None:  # forgotten under the memory bound meanwhile
            return
        record.release()
        if forget is not None:
            kept = [entry for entry in record.failures if entry[1] != forget]
            record.failures.clear()
            record.failures.extend(kept)
        if record.idle():
            del records[key]


def basic_user(authorization: str | None) -> str | None:
    """The user name of HTTP Basic credentials ("" if they are malformed); None for any other scheme.

    Only Basic credentials cost a password hash to check, so only they are counted.
    """
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, binascii.Error):
        return ""
    user, sep, _ = decoded.partition(":")
    return user if sep else ""


def _digest(user: str) -> bytes:
    return hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=16).digest()
