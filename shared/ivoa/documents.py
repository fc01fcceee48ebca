"""The broker's VOSI documents (capabilities, availability) and its VOResource record, as pure
functions of what they describe: every value (identifier, URLs, titles from the configuration) is
text to the XML writer, never markup, and characters XML 1.0 cannot carry are replaced.

The namespaces and the structure follow VOSI 1.1 (VOSICapabilities and VOSIAvailability v1.0),
VOResource 1.1, VODataService 1.1 and RegistryInterface 1.0; the IDs of the ways to authenticate
are those of IVOA Single-Sign-On 2.0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from xml.etree import ElementTree as ET

VOSI_CAPABILITIES_NS = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
VOSI_AVAILABILITY_NS = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
VR_NS = "http://www.ivoa.net/xml/VOResource/v1.0"
VS_NS = "http://www.ivoa.net/xml/VODataService/v1.1"
RI_NS = "http://www.ivoa.net/xml/RegistryInterface/v1.0"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

VOSI_CAPABILITIES = "ivo://ivoa.net/std/VOSI#capabilities"
VOSI_AVAILABILITY = "ivo://ivoa.net/std/VOSI#availability"
#: No standardID is defined for the Execution Broker yet (ivoa-std/ExecutionBroker); this is the form
#: the IVOA gives its standards' IDs, provisional until the standard registers one.
EXECUTION_BROKER = "ivo://ivoa.net/std/ExecutionBroker"
#: The interface's version: the Calycopis schema the API speaks.
EXECUTION_BROKER_VERSION = "1.0.7"

#: IVOA SSO 2.0: HTTP Basic with a user name and password.
BASIC_AA = "ivo://ivoa.net/sso#BasicAA"
#: IVOA SSO 2.0: a bearer token in the Authorization header (here an OIDC provider's access token).
BEARER_TOKEN = "ivo://ivoa.net/sso#token"

# Everything XML 1.0 cannot hold, even escaped (control characters, lone surrogates, U+FFFE/U+FFFF).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """`value` with each character XML cannot carry replaced by U+FFFD; the writer escapes the rest."""
    return _NOT_XML.sub("\ufffd", value)


@dataclass(frozen=True)
class BrokerService:
    """What the capabilities say: who the broker is, where, and how a client authenticates.

    ``security`` holds SSO standardIDs; ``None`` among them means anonymous access (an empty
    ``securityMethod``)."""

    ivoid: str
    base_url: str
    security: tuple[str | None, ...]

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path


def security_methods(*, oidc: bool, public_reads: bool) -> tuple[str | None, ...]:
    """The ways the HTTP API accepts a caller: Basic always (local identities, the admin), bearer
    tokens with an OIDC issuer, and anonymous reads when they are public. The event-stream tokens
    are not among them: they are handed out to a caller already authenticated, for ``/events`` only."""
    methods: list[str | None] = [BASIC_AA]
    if oidc:
        methods.append(BEARER_TOKEN)
    if public_reads:
        methods.append(None)
    return tuple(methods)


@dataclass(frozen=True)
class Availability:
    available: bool
    up_since: datetime | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Curation:
    """The record's words about the broker, from the operator."""

    title: str
    publisher: str
    contact_name: str
    contact_email: str | None = None
    description: str = (
        "An IVOA Execution Broker: it answers execution requests (Calycopis schema "
        f"{EXECUTION_BROKER_VERSION}) with offers, and runs the accepted ones on its resource pools."
    )
    subjects: tuple[str, ...] = field(default=("Virtual observatories",))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attributes.items()})
    if text is not None:
        element.text = xml_text(text)
    return element


def _capability(
    parent: ET.Element, standard_id: str, url: str, use: str, security: Iterable[str | None], **version: str
) -> None:
    capability = _sub(parent, "capability", standardID=standard_id)
    interface = _sub(capability, "interface", role="std", **{f"{{{XSI_NS}}}type": "vs:ParamHTTP"}, **version)
    _sub(interface, "accessURL", url, use=use)
    for method in security:
        if method is None:
            _sub(interface, "securityMethod")
        else:
            _sub(interface, "securityMethod", standardID=method)


def _capabilities_into(parent: ET.Element, service: BrokerService) -> None:
    # The VOSI endpoints are public: no securityMethod is the VOResource way of saying anonymous.
    _capability(parent, VOSI_CAPABILITIES, service.url("/capabilities"), "full", ())
    _capability(parent, VOSI_AVAILABILITY, service.url("/availability"), "full", ())
    _capability(
        parent, EXECUTION_BROKER, service.url(""), "base", service.security, version=EXECUTION_BROKER_VERSION
    )


def _serialize(root: ET.Element) -> bytes:
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _root(tag: str, **prefixes: str) -> ET.Element:
    # Prefixes used only inside attribute values (xsi:type="vs:ParamHTTP") are declared by hand: the
    # writer declares only those of element and attribute names.
    root = ET.Element(tag)
    for prefix, namespace in prefixes.items():
        root.set(f"xmlns:{prefix}", namespace)
    return root


def capabilities(service: BrokerService) -> bytes:
    """The VOSI capabilities document of the broker."""
    ET.register_namespace("vosi", VOSI_CAPABILITIES_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = _root(f"{{{VOSI_CAPABILITIES_NS}}}capabilities", vr=VR_NS, vs=VS_NS)
    _capabilities_into(root, service)
    return _serialize(root)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment.utcoffset() is not None else moment.isoformat()


def availability(report: Availability) -> bytes:
    """The VOSI availability document."""
    ET.register_namespace("vosi", VOSI_AVAILABILITY_NS)
    root = ET.Element(f"{{{VOSI_AVAILABILITY_NS}}}availability")
    _sub(root, f"{{{VOSI_AVAILABILITY_NS}}}available", "true" if report.available else "false")
    if report.up_since is not None:
        _sub(root, f"{{{VOSI_AVAILABILITY_NS}}}upSince", _timestamp(report.up_since))
    for note in report.notes:
        _sub(root, f"{{{VOSI_AVAILABILITY_NS}}}note", note)
    return _serialize(root)


def resource_record(service: BrokerService, curation: Curation, *, now: datetime) -> bytes:
    """A VOResource record (``ri:Resource`` of type ``vr:Service``) for a registry: the identifier,
    the operator's curation and content, and the same capabilities as ``/capabilities``."""
    ET.register_namespace("ri", RI_NS)
    ET.register_namespace("xsi", XSI_NS)
    stamp = _timestamp(now)
    root = _root(f"{{{RI_NS}}}Resource", vr=VR_NS, vs=VS_NS)
    root.set(f"{{{XSI_NS}}}type", "vr:Service")
    root.set("created", stamp)
    root.set("updated", stamp)
    root.set("status", "active")
    _sub(root, "title", curation.title)
    _sub(root, "identifier", service.ivoid)
    curation_element = _sub(root, "curation")
    _sub(curation_element, "publisher", curation.publisher)
    contact = _sub(curation_element, "contact")
    _sub(contact, "name", curation.contact_name)
    if curation.contact_email:
        _sub(contact, "email", curation.contact_email)
    content = _sub(root, "content")
    for subject in curation.subjects:
        _sub(content, "subject", subject)
    _sub(content, "description", curation.description)
    _sub(content, "referenceURL", service.url("/docs"))
    _capabilities_into(root, service)
    return _serialize(root)
