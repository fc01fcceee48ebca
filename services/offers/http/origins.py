"""Which origins may write: the broker's own, those an operator lists, and no other.

A browser attaches the caller's HTTP Basic credentials (cached after a login dialog) to a request
that another site's page makes, so a write is refused when its ``Origin`` is not one the broker
serves its own pages from. Pure functions: the guard middleware applies them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: An ``Origin`` header longer than this is not echoed whole in the refusal.
_ECHO_LIMIT = 200


def origin_of(url: str, *, exact: bool = False) -> str | None:
    """``scheme://host:port`` of an http(s) URL, port always written; None if it is not one.

    ``exact`` asks for an origin itself (what an ``Origin`` header or a setting holds): no path, query,
    fragment or user info. Host names compare without case, and a default port equals its absence.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if exact and (parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc):
        return None
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


def parse_origins(text: str) -> frozenset[str]:
    """The origins of a comma-separated list; ``ValueError`` naming the first entry that is not one."""
    origins = set()
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        origin = origin_of(entry, exact=True)
        if origin is None:
            raise ValueError(
                f"EB_HTTP_ALLOWED_ORIGINS: {entry!r} is not an origin "
                "(http:// or https://, a host, an optional port, no path)"
            )
        origins.add(origin)
    return frozenset(origins)


def own_origins(base_url: str, *, loopback: bool) -> frozenset[str]:
    """The broker's own origin; with ``loopback`` (no public URL set) its other loopback names too,
    so that a page opened at ``http://localhost:<port>/`` may write as well as one at 127.0.0.1."""
    origin = origin_of(base_url)
    if origin is None:
        raise ValueError(f"the broker's base URL {base_url!r} is not an http(s) URL")
    if not loopback:
        return frozenset({origin})
    port = origin.rsplit(":", 1)[1]
    return frozenset({origin} | {f"http://{host}:{port}" for host in ("127.0.0.1", "localhost", "[::1]")})


def write_refusal(
    method: str, origin: str | None, fetch_site: str | None, allowed: frozenset[str]
) -> str | None:
    """Why a request may not write (a message for the caller), or None when it may.

    Safe methods are never refused. A write without ``Origin`` comes from a client that is not a
    browser page (a CLI, curl) and is allowed unless ``Sec-Fetch-Site`` says a browser sent it from
    another site. ``Origin: null`` (a sandboxed frame, a ``data:`` page, some redirects) is refused.
    """
    if method.upper() not in UNSAFE_METHODS:
        return None
    if origin is not None:
        if origin.strip().lower() == "null":
            return "A write from an opaque origin (Origin: null) is refused"
        if origin_of(origin, exact=True) in allowed:
            return None
        shown = origin if len(origin) <= _ECHO_LIMIT else origin[:_ECHO_LIMIT] + "…"
        return (
            f"A write from origin {shown} is refused: only pages of {', '.join(sorted(allowed))} may "
            "write (set EB_PUBLIC_URL to the broker's address, or list more origins in "
            "EB_HTTP_ALLOWED_ORIGINS)"
        )
    if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
        return "A cross-site write (Sec-Fetch-Site: cross-site) is refused"
    return None
