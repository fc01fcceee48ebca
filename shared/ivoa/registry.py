"""Finding a service through an IVOA registry (pure): the registry's resource-caps document, a
service's VOSI capabilities, and the rule every URL read from them must follow.

* **resource-caps** is the plain-text view of a registry that the CADC/CANFAR clients read: `#`
  comments, blank lines, and one ``<resource identifier> = <capabilities URL>`` per line. A line is
  split at its first ``=`` only, so a capabilities URL with ``=`` in its query survives. Lines that are
  not entries (no ``=``, or no ``ivo://`` identifier) are skipped: the document lists many services and
  one odd line must not hide the rest. The entry asked for must be there once (or repeated with the
  same URL); two different URLs for one identifier are refused as ambiguous. Identifiers compare
  without regard to case, as IVOA Identifiers 2.0 says.
* **VOSI capabilities** (root ``vosi:capabilities``): each ``capability`` has a ``standardID`` and
  ``interface`` elements with an ``accessURL`` and the ``securityMethod`` IDs it accepts (an empty
  one: anonymous). The XML is read with defusedxml and any DTD is refused (a capabilities document
  never needs one; it is where entity expansion attacks live).

Both documents come from the network, so both have a size limit, and a hostile one gets a
`DiscoveryError` that says what is wrong with it, quoting at most a short, cut piece of it.

URLs: ``https`` only, except ``http`` to this machine (127.0.0.1, ::1, localhost) for tests and a
registry on the same host; no user name or password in them (they end up in logs and spans), no
fragment, no white space. The rule applies to the registry setting, the capabilities URL and the
accessURL alike: a token may follow the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from shared.ivoa.documents import BEARER_TOKEN, VOSI_CAPABILITIES_NS
from shared.ivoa.identifiers import MAX_LENGTH as MAX_IVOID_LENGTH

#: CADC's whole resource-caps is a few kilobytes; 1 MiB leaves room for a large registry.
MAX_RESOURCE_CAPS_BYTES = 1024 * 1024
#: skaha's capabilities are about 3 kB; 256 KiB is far more than a service describes itself with.
MAX_CAPABILITIES_BYTES = 256 * 1024
MAX_URL_LENGTH = 2048
#: Hosts `http` is allowed for: this machine only.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
#: How much of a hostile value an error message quotes.
QUOTED = 120


class DiscoveryError(ValueError):
    """A registry or capabilities document, or a URL from one, that cannot be used; `message` says
    why and never holds more than a short quote of what came from the network."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Interface:
    access_url: str
    #: The securityMethod standardIDs it accepts; None is an empty securityMethod (anonymous).
    security: tuple[str | None, ...]
    role: str | None = None


@dataclass(frozen=True)
class Capability:
    standard_id: str
    interfaces: tuple[Interface, ...]


def quoted(value: str) -> str:
    """`value` for an error message: cut to QUOTED characters, as a Python literal (no raw markup)."""
    return repr(value[:QUOTED] + ("…" if len(value) > QUOTED else ""))


def url_problem(url: str) -> str | None:
    """Why `url` may not be used to find or call a service, or None when it may."""
    if len(url) > MAX_URL_LENGTH:
        return f"is {len(url)} characters long, more than the limit of {MAX_URL_LENGTH}"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "holds white space or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        return "is not a URL"
    if not host:
        return "names no host"
    if parts.username is not None or parts.password is not None:
        return "holds a user name or password (they would be logged); give credentials in the settings"
    if parts.fragment:
        return "has a fragment (#)"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and host.lower() in LOOPBACK_HOSTS:
        return None
    if parts.scheme == "http":
        return "uses http: only https is allowed, except to this machine (127.0.0.1, ::1, localhost)"
    return "is not an https URL"


def checked_url(url: str, what: str) -> str:
    problem = url_problem(url)
    if problem is not None:
        raise DiscoveryError(f"{what} {quoted(url)} {problem}")
    return url


def _text(data: bytes, what: str, limit: int) -> str:
    if len(data) > limit:
        raise DiscoveryError(f"{what} is {len(data)} bytes, more than the limit of {limit}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DiscoveryError(f"{what} is not UTF-8 text (byte {error.start})") from None


def parse_resource_caps(data: bytes) -> dict[str, list[str]]:
    """Every entry of a resource-caps document: lower-cased identifier → its capabilities URLs, in
    the order listed (more than one only when the document repeats an identifier)."""
    text = _text(data, "the resource-caps document", MAX_RESOURCE_CAPS_BYTES)
    entries: dict[str, list[str]] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        ivoid = key.strip().lower()
        if not equals or not ivoid.startswith("ivo://") or len(ivoid) > MAX_IVOID_LENGTH:
            continue
        urls = entries.setdefault(ivoid, [])
        if value.strip() not in urls:
            urls.append(value.strip())
    return entries


def capabilities_url(data: bytes, ivoid: str) -> str:
    """The capabilities URL a resource-caps document gives for `ivoid`, checked."""
    urls = parse_resource_caps(data).get(ivoid.lower(), [])
    if not urls:
        raise DiscoveryError(f"the registry lists no {ivoid}")
    if len(urls) > 1:
        raise DiscoveryError(
            f"the registry lists {ivoid} {len(urls)} times with different capabilities URLs "
            f"({', '.join(quoted(url) for url in urls[:3])}): it is ambiguous"
        )
    if not urls[0]:
        raise DiscoveryError(f"the registry lists {ivoid} with an empty capabilities URL")
    return checked_url(urls[0], f"the capabilities URL of {ivoid}")


def _local(element: Element) -> str:
    """An element's name without its namespace: VOSI's children are unqualified, but some services
    qualify them, and either means the same."""
    tag = element.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_capabilities(data: bytes) -> tuple[Capability, ...]:
    """The capabilities of a VOSI capabilities document, in document order."""
    what = "the capabilities document"
    if len(data) > MAX_CAPABILITIES_BYTES:
        raise DiscoveryError(f"{what} is {len(data)} bytes, more than the limit of {MAX_CAPABILITIES_BYTES}")
    try:
        root = SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise DiscoveryError(
            f"{what} declares a DTD or entities, which VOSI never needs; it is refused"
        ) from None
    except ParseError as error:
        line, column = error.position
        raise DiscoveryError(f"{what} is not well-formed XML (line {line}, column {column})") from None
    expected = f"{{{VOSI_CAPABILITIES_NS}}}capabilities"
    if root.tag != expected:
        raise DiscoveryError(
            f"{what} has the root element {quoted(str(root.tag))}, not capabilities in the "
            f"namespace {VOSI_CAPABILITIES_NS}"
        )
    found: list[Capability] = []
    for element in root:
        if _local(element) != "capability":
            continue
        interfaces = tuple(
            interface
            for child in element
            if _local(child) == "interface" and (interface := _interface(child)) is not None
        )
        found.append(Capability((element.get("standardID") or "").strip(), interfaces))
    return tuple(found)


def _interface(element: Element) -> Interface | None:
    url = next((child.text for child in element if _local(child) == "accessURL"), None)
    if url is None or not url.strip():
        return None  # an interface with no address cannot be called
    security = tuple(
        (child.get("standardID") or "").strip() or None
        for child in element
        if _local(child) == "securityMethod"
    )
    return Interface(url.strip(), security, element.get("role"))


def access_url(
    capabilities: tuple[Capability, ...], standard_id: str, *, security: str | None = BEARER_TOKEN
) -> str | None:
    """The accessURL of the first interface of the capability `standard_id` (compared without regard
    to case) that accepts `security`, else of its first interface; None if the capability is absent.

    A service lists an interface per way to authenticate (skaha: token, cookie, client certificate),
    usually at the same URL; the broker authenticates with a bearer token, so that one comes first."""
    wanted = standard_id.lower()
    interfaces = [
        interface
        for capability in capabilities
        if capability.standard_id.lower() == wanted
        for interface in capability.interfaces
        if interface.role in (None, "std")
    ]
    preferred = [interface for interface in interfaces if security in interface.security]
    chosen = (preferred or interfaces)[:1]
    return chosen[0].access_url if chosen else None
