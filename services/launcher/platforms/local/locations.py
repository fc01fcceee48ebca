"""Where the local platform may read a notebook or data from, on behalf of a user.

The launcher reads with the broker's privileges, so a location is a request to read something the
broker can reach. Hence:

- a local path (or a ``file:`` URL) must be, once ``..`` and symbolic links are resolved, inside a
  folder the pool allows (``allowed_paths``) and outside the folders that are never readable (the
  broker's data dir, the local work root); with no allowed folder, no local path is readable;
- an http(s) URL's host must resolve only to public addresses, unless the pool names the host in
  ``allowed_hosts``: loopback, private, link-local (cloud metadata), shared, multicast, reserved and
  unspecified addresses, in IPv4 and IPv6 (IPv4-mapped too), reach the broker's own network. Every
  request is checked, redirects included (`GuardedTransport`). What is not covered: a host whose DNS
  answer changes between the check and the connection (DNS rebinding) — `allowed_hosts` is the way
  to name internal hosts, and the check is a guard against mistakes and simple probing.

Error messages name the location and the rule, never any content read from it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

# IPv6 addresses that carry an IPv4 address in their last 32 bits (RFC 6052 NAT64).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class LocationRefused(Exception):
    """A location the pool does not allow; the message says which rule, never what is there."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class LocationRules:
    allowed_paths: tuple[Path, ...] = ()
    allowed_hosts: frozenset[str] = frozenset()
    # Never readable, even inside an allowed folder: the broker's data dir, the work root.
    hidden_paths: tuple[Path, ...] = ()

    @classmethod
    def of(
        cls, allowed_paths: Iterable[Path | str], allowed_hosts: Iterable[str], hidden_paths: Iterable[Path]
    ) -> LocationRules:
        return cls(
            tuple(_real(Path(p)) for p in allowed_paths),
            frozenset(h.lower().strip("[]") for h in allowed_hosts),
            tuple(_real(p) for p in hidden_paths),
        )


def _real(path: Path) -> Path:
    """The path with every symbolic link and ``..`` resolved (a missing tail is kept as written)."""
    return Path(path).expanduser().resolve(strict=False)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def local_path(location: str, rules: LocationRules, noun: str) -> Path:
    """The real path a ``file:`` URL or an absolute path names, if the rules allow reading it."""
    if location.startswith("file:"):
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise LocationRefused(f"{noun} location {location!r}: a file URL must name no host")
        written = Path(unquote(parts.path))
    else:
        written = Path(location)
    if not written.is_absolute():
        raise LocationRefused(f"{noun} location {location!r} must be an absolute path or a URL")
    real = _real(written)
    if not any(_inside(real, folder) for folder in rules.allowed_paths):
        raise LocationRefused(
            f"{noun} location {location!r} is not inside a folder this pool allows local files from "
            "(its allowed_paths)"
        )
    if any(_inside(real, folder) or _inside(folder, real) for folder in rules.hidden_paths):
        raise LocationRefused(f"{noun} location {location!r} is inside the broker's own files")
    return real


def public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (see the module docstring for the ranges)."""
    if "%" in address:
        return False  # an IPv6 zone names a link: never public
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not public_address(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


async def check_host(url: str, rules: LocationRules, noun: str) -> None:
    """Refuse an http(s) URL whose host is internal (see the module docstring) unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise LocationRefused(f"{noun} location {url!r}: only http and https URLs are fetched")
    host = (parts.hostname or "").lower()
    if not host:
        raise LocationRefused(f"{noun} location {url!r} names no host")
    if host in rules.allowed_hosts:
        return
    try:
        addresses = [host] if _is_ip(host) else await _resolve(host, parts.port)
    except OSError:
        # Unresolvable: the fetch itself fails with the usual (retried) connection error.
        return
    internal = [a for a in addresses if not public_address(a)]
    if internal:
        raise LocationRefused(
            f"{noun} location {url!r}: the host {host} has the internal address {internal[0]} "
            "(loopback, private or link-local); a pool allows such hosts by name in allowed_hosts"
        )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int | None) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request's host first, so a redirect is checked too."""

    def __init__(self, rules: LocationRules) -> None:
        self._rules = rules
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await check_host(str(request.url), self._rules, "the")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __repr__(self) -> str:
        return f"GuardedTransport({self._rules!r})"
