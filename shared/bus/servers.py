"""The bus's address: one server's URL, or a comma-separated list of a cluster's nodes.

``EB_NATS_URL`` and ``--nats-url`` accept either (``broker up --cluster 3`` hands every process the
list of its three nodes). nats-py takes a list, not a comma-separated string, so every
``nats.connect`` of ours passes `server_urls`: the client then connects to any node that is up and
moves to another when its node dies.
"""

from __future__ import annotations


class NoServerUrl(ValueError):
    """A NATS URL setting that names no server."""


def server_urls(url: str) -> list[str]:
    """The servers of ``url``, in the order given (nats-py shuffles them to spread the clients)."""
    urls = [part.strip() for part in url.split(",") if part.strip()]
    if not urls:
        raise NoServerUrl(f"no NATS server in the URL setting {url!r}")
    return urls


async def unreported(_: Exception) -> None:
    """An ``error_cb`` for a short-lived connection of a tool: a node of the list that is down (it
    refuses the connection, the next one is tried) is expected, not an error to log with a trace."""
    return None
