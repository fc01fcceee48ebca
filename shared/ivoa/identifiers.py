"""IVOA identifiers (IVOA Identifiers 2.0): checking the broker's own, ``EB_IVOID``, and its default.

A resource identifier is ``ivo://<authority>[/<resource key>]``: the authority is at least three
characters, a letter or digit first; the key is path characters only. The broker's identifier names
a resource, so it has no query and no fragment (those name parts of a resource).
"""

from __future__ import annotations

import re
import socket
from typing import Annotated

from pydantic import AfterValidator

SCHEME = "ivo://"
#: The registry's own limit on an identifier's length (RegistryInterface stores them as such).
MAX_LENGTH = 255
_AUTHORITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~\-()'!*+=]{2,}")
# VOResource's IdentifierURI: non-empty segments of these characters (no %, no reserved characters).
_KEY = re.compile(r"(/[A-Za-z0-9._~\-!*'()+=]+)*")
#: The resource key of the default identifier.
DEFAULT_KEY = "execution-broker"


def ivoid_problem(value: str) -> str | None:
    """Why `value` is not an IVOA resource identifier, or None when it is one."""
    if len(value) > MAX_LENGTH:
        return f"is {len(value)} characters long, more than the limit of {MAX_LENGTH}"
    if value[: len(SCHEME)].lower() != SCHEME:
        return "must start with ivo:// (an IVOA identifier, e.g. ivo://example.org/execution-broker)"
    rest = value[len(SCHEME) :]
    if "?" in rest or "#" in rest:
        return "must have no query (?) or fragment (#): it names a whole resource, not a part of one"
    authority, slash, key = rest.partition("/")
    if not _AUTHORITY.fullmatch(authority):
        return (
            "must have an authority of at least 3 characters, a letter or digit first, then letters, "
            "digits and ._~-()'!*+= only"
        )
    if not _KEY.fullmatch(slash + key):
        return (
            "must have a resource key of non-empty /-separated parts of letters, digits and ._~-!*'()+= "
            "only (no spaces, %, quotes or other URI delimiters)"
        )
    return None


def checked_ivoid(value: str) -> str:
    problem = ivoid_problem(value)
    if problem is not None:
        raise ValueError(f"EB_IVOID {problem}")
    return value


def default_ivoid(host: str | None = None) -> str:
    """``ivo://<host>.local/execution-broker``: ``.local`` says it is this machine's name, not an
    authority registered anywhere, so a record with it is plainly not yet meant for publishing."""
    name = (host if host is not None else socket.gethostname()).lower()
    # A DNS name is at most 253 characters; cut a longer one so the identifier stays within MAX_LENGTH.
    label = re.sub(r"[^a-z0-9.-]+", "-", name)[:200].strip(".-") or "localhost"
    authority = f"{label}.local"
    return f"{SCHEME}{authority}/{DEFAULT_KEY}"


#: A setting holding an IVOA resource identifier; a wrong one is an error at start-up.
IvoId = Annotated[str, AfterValidator(checked_ivoid)]
