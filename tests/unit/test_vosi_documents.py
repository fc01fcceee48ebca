"""The broker's IVOA identifier and its VOSI and VOResource documents, as pure functions of the
configuration: they validate against the schemas, and a hostile value stays text."""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import pytest
from pydantic import ValidationError

from services.offers.http.settings import HttpSettings
from shared.ivoa import documents
from shared.ivoa.identifiers import default_ivoid, ivoid_problem
from shared.settings import Settings
from tests.ivoa_schemas import validate

NOW = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)
HOSTILE = '</title><evil a="1">&amp;\' ]]> \x00\x1b\ud800\ufffe'
SERVICE = documents.BrokerService(
    "ivo://example.org/execution-broker",
    "https://broker.example.org/eb",
    documents.security_methods(oidc=True, public_reads=False),
)
VR = {"vosi": documents.VOSI_CAPABILITIES_NS, "ri": documents.RI_NS}


def capability_urls(root: ET.Element) -> dict[str, list[str | None]]:
    return {str(c.get("standardID")): [u.text for u in c.iter("accessURL")] for c in root.iter("capability")}


@pytest.mark.parametrize(
    "ivoid",
    [
        "ivo://example.org/execution-broker",
        "ivo://skao.int",
        "IVO://uk.skao.int/eb/broker-1",
        "ivo://a.b/x~y(1)",
    ],
)
def test_an_ivoid_is_accepted(ivoid: str) -> None:
    assert ivoid_problem(ivoid) is None
    assert Settings(ivoid=ivoid).ivoid == ivoid


@pytest.mark.parametrize(
    ("ivoid", "problem"),
    [
        ("https://example.org/eb", "must start with ivo://"),
        ("ivo://ab/eb", "authority of at least 3 characters"),
        ("ivo://-example.org/eb", "authority of at least 3 characters"),
        ("ivo://example.org/eb?x", "no query (?) or fragment (#)"),
        ("ivo://example.org/eb#capabilities", "no query (?) or fragment (#)"),
        ("ivo://example.org/e b", "resource key of non-empty"),
        ("ivo://example.org//eb", "resource key of non-empty"),
        ('ivo://example.org/"><x/>', "resource key of non-empty"),
        ("ivo://example.org/" + "k" * 300, "more than the limit of 255"),
    ],
)
def test_a_wrong_ivoid_gets_a_specific_error(ivoid: str, problem: str) -> None:
    assert problem in (ivoid_problem(ivoid) or "")
    for settings in (Settings, HttpSettings):
        with pytest.raises(ValidationError, match="EB_IVOID") as caught:
            settings(ivoid=ivoid)
        assert problem in str(caught.value)


def test_the_default_ivoid_is_plainly_local_and_valid() -> None:
    assert default_ivoid("build-01.example.org") == "ivo://build-01.example.org.local/execution-broker"
    for host in ("", "x", "Üñí côdé!", ".-.", "a" * 300):
        ivoid = default_ivoid(host)
        assert ivoid.split("/")[2].endswith(".local")
        assert ivoid_problem(ivoid) is None, ivoid
    assert Settings().ivoid == HttpSettings().ivoid == default_ivoid()


def test_security_methods_follow_what_the_api_accepts() -> None:
    assert documents.security_methods(oidc=False, public_reads=False) == (documents.BASIC_AA,)
    assert documents.security_methods(oidc=True, public_reads=True) == (
        documents.BASIC_AA,
        documents.BEARER_TOKEN,
        None,
    )


def test_capabilities_validate_and_name_every_endpoint() -> None:
    document = documents.capabilities(SERVICE)
    validate("capabilities", document)
    root = ET.fromstring(document)
    assert root.tag == f"{{{documents.VOSI_CAPABILITIES_NS}}}capabilities"
    assert capability_urls(root) == {
        documents.VOSI_CAPABILITIES: ["https://broker.example.org/eb/capabilities"],
        documents.VOSI_AVAILABILITY: ["https://broker.example.org/eb/availability"],
        documents.EXECUTION_BROKER: ["https://broker.example.org/eb"],
    }
    broker = next(c for c in root.iter("capability") if c.get("standardID") == documents.EXECUTION_BROKER)
    methods = [m.get("standardID") for m in broker.iter("securityMethod")]
    assert methods == [documents.BASIC_AA, documents.BEARER_TOKEN]


def test_anonymous_access_is_an_empty_security_method() -> None:
    public = documents.BrokerService(SERVICE.ivoid, SERVICE.base_url, (documents.BASIC_AA, None))
    document = documents.capabilities(public)
    validate("capabilities", document)
    methods = [m.attrib for m in ET.fromstring(document).iter("securityMethod")]
    assert methods == [{"standardID": documents.BASIC_AA}, {}]


@pytest.mark.parametrize("available", [True, False])
def test_availability_validates(available: bool) -> None:
    report = documents.Availability(available, NOW if available else None, () if available else ("down",))
    document = documents.availability(report)
    validate("availability", document)
    root = ET.fromstring(document)
    ns = {"v": documents.VOSI_AVAILABILITY_NS}
    assert root.findtext("v:available", namespaces=ns) == str(available).lower()
    assert root.findtext("v:upSince", namespaces=ns) == ("2026-12-02T15:00:00Z" if available else None)
    assert [n.text for n in root.findall("v:note", ns)] == ([] if available else ["down"])


def test_the_record_validates_and_carries_the_same_capabilities() -> None:
    curation = documents.Curation("Broker", "SKAO", "Operator", "ops@example.org")
    document = documents.resource_record(SERVICE, curation, now=NOW)
    validate("record", document)
    root = ET.fromstring(document)
    assert root.tag == f"{{{documents.RI_NS}}}Resource"
    assert root.get(f"{{{documents.XSI_NS}}}type") == "vr:Service"
    assert (root.get("created"), root.get("status")) == ("2026-12-02T15:00:00Z", "active")
    assert root.findtext("identifier") == SERVICE.ivoid
    assert root.findtext("curation/publisher") == "SKAO"
    assert root.findtext("curation/contact/email") == "ops@example.org"
    assert capability_urls(root) == capability_urls(ET.fromstring(documents.capabilities(SERVICE)))


def test_hostile_configuration_values_stay_text() -> None:
    """Every value from the configuration goes through the XML writer's escaping, and the
    characters XML cannot hold at all become U+FFFD: the documents stay well-formed and the same."""
    hostile = documents.BrokerService(SERVICE.ivoid + HOSTILE, "https://x/" + HOSTILE, (HOSTILE, None))
    curation = documents.Curation(HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE, (HOSTILE,))
    readable = documents.xml_text(HOSTILE)
    assert "\x00" not in readable and "\ufffe" not in readable and "</title>" in readable
    for document in (
        documents.capabilities(hostile),
        documents.availability(documents.Availability(False, None, (HOSTILE,))),
        documents.resource_record(hostile, curation, now=NOW),
    ):
        root = ET.fromstring(document)
        assert not list(root.iter("evil"))
        texts = [t for e in root.iter() for t in (e.text, *e.attrib.values()) if t and "evil" in t]
        assert texts and all(readable in t for t in texts)
    record = ET.fromstring(documents.resource_record(hostile, curation, now=NOW))
    assert record.findtext("title") == readable
    assert record.findtext("content/subject") == readable
