"""Registry discovery, pure: resource-caps, VOSI capabilities, the URL rule and skaha's endpoint, with
hostile documents (too large, malformed, entity bombs) refused with a specific error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.launcher.platforms.canfar.endpoint import (
    SESSIONS_V0,
    SESSIONS_V1,
    SkahaEndpoint,
    skaha_endpoint,
)
from services.launcher.platforms.canfar.settings import CanfarSettings
from shared.ivoa.registry import (
    MAX_CAPABILITIES_BYTES,
    MAX_RESOURCE_CAPS_BYTES,
    Capability,
    DiscoveryError,
    Interface,
    access_url,
    capabilities_url,
    parse_capabilities,
    parse_resource_caps,
    url_problem,
)
from tests.fakes.registry import CERTIFICATE, COOKIE, TOKEN, capabilities_document
from tests.ivoa_schemas import validate

SKAHA = "ivo://canfar.cam.uksrc.org/skaha"
RESOURCE_CAPS = b"""# resource-caps of a registry
#   resourceID = capabilities URL

ivo://cadc.nrc.ca/arc = https://ws-uv.canfar.net/arc/capabilities
ivo://canfar.cam.uksrc.org/skaha = https://canfar.cam.uksrc.org/skaha/capabilities
   ivo://example.org/tap=https://example.org/tap/capabilities?x=1&y=2
a line that is not an entry
http://not.an.ivoid = https://example.org/nope
"""

# As skaha writes it: unqualified children, one interface per security method (the first is not
# the token one), and the VOSI capabilities of its own.
SKAHA_CAPABILITIES = b"""<?xml version="1.0" encoding="UTF-8"?>
<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
    xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <capability standardID="ivo://ivoa.net/std/VOSI#capabilities">
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="full">https://canfar.cam.uksrc.org/skaha/capabilities</accessURL>
    </interface>
  </capability>
  <capability standardID="vos://cadc.nrc.ca~vospace/CADC/std/Proc#sessions-1.0">
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="base">https://canfar.cam.uksrc.org/skaha/v0</accessURL>
      <securityMethod standardID="ivo://ivoa.net/sso#token"/>
    </interface>
  </capability>
  <capability standardID="http://www.opencadc.org/std/platform#session-1">
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="base">https://cookie.canfar.cam.uksrc.org/skaha/v1/session</accessURL>
      <securityMethod standardID="ivo://ivoa.net/sso#cookie"/>
    </interface>
    <interface xsi:type="vs:ParamHTTP" role="std">
      <accessURL use="base"> https://canfar.cam.uksrc.org/skaha/v1/session </accessURL>
      <securityMethod standardID="ivo://ivoa.net/sso#token"/>
    </interface>
  </capability>
</vosi:capabilities>
"""


# -- resource-caps ----------------------------------------------------------------------------------


def test_resource_caps_entries_are_found_by_identifier_in_any_case() -> None:
    entries = parse_resource_caps(RESOURCE_CAPS)
    assert set(entries) == {"ivo://cadc.nrc.ca/arc", SKAHA, "ivo://example.org/tap"}
    assert capabilities_url(RESOURCE_CAPS, SKAHA.upper()) == "https://canfar.cam.uksrc.org/skaha/capabilities"
    # Split at the first "=" only: a query string survives (cadcutils' bare split would break it).
    assert capabilities_url(RESOURCE_CAPS, "ivo://example.org/tap") == (
        "https://example.org/tap/capabilities?x=1&y=2"
    )


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"# nothing\n", "the registry lists no ivo://canfar.cam.uksrc.org/skaha"),
        (
            f"{SKAHA} = https://a.example/capabilities\n{SKAHA} = https://b.example/capabilities\n".encode(),
            "2 times with different capabilities URLs",
        ),
        (f"{SKAHA} =   \n".encode(), "with an empty capabilities URL"),
        (f"{SKAHA} = http://evil.example/capabilities\n".encode(), "uses http: only https is allowed"),
        (f"{SKAHA} = ftp://example.org/capabilities\n".encode(), "is not an https URL"),
        (f"{SKAHA} = https://user:pw@example.org/c\n".encode(), "holds a user name or password"),
        (b"\xff\xfe" + SKAHA.encode(), "is not UTF-8 text"),
        (b"#" * (MAX_RESOURCE_CAPS_BYTES + 1), f"more than the limit of {MAX_RESOURCE_CAPS_BYTES}"),
    ],
    ids=["missing", "ambiguous", "empty", "plain-http", "ftp", "credentials", "not-utf8", "huge"],
)
def test_a_resource_caps_that_cannot_be_used_gets_a_specific_error(document: bytes, problem: str) -> None:
    with pytest.raises(DiscoveryError) as caught:
        capabilities_url(document, SKAHA)
    assert problem in caught.value.message


def test_a_repeated_entry_with_the_same_url_is_not_ambiguous() -> None:
    line = f"{SKAHA} = https://a.example/capabilities\n".encode()
    assert capabilities_url(line + line, SKAHA) == "https://a.example/capabilities"


@given(st.binary(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_any_bytes_as_resource_caps_give_a_url_or_a_discovery_error(document: bytes) -> None:
    try:
        url = capabilities_url(document, SKAHA)
    except DiscoveryError as error:
        assert len(error.message) < 600  # a quote of the input, never all of it
    else:
        assert url_problem(url) is None


# -- the URL rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://ws-uv.canfar.net/skaha/capabilities",
        "https://[2001:db8::1]:8443/reg/resource-caps",
        "http://127.0.0.1:8080/reg/resource-caps",
        "http://localhost/skaha",
        "http://[::1]:9000/skaha",
    ],
)
def test_https_urls_and_http_to_this_machine_are_allowed(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://ws-uv.canfar.net/skaha", "uses http"),
        ("http://127.0.0.2/skaha", "uses http"),
        ("http://localhost.evil.example/skaha", "uses http"),
        ("file:///etc/passwd", "names no host"),
        ("javascript:alert(1)", "names no host"),
        ("https:///path", "names no host"),
        ("https://host:port/", "is not a URL"),
        ("https://a b/", "white space"),
        ("https://host/\x00", "control characters"),
        ("https://host/x#frag", "has a fragment"),
        ("https://host/" + "x" * 3000, "more than the limit of 2048"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, problem: str) -> None:
    assert problem in (url_problem(url) or "")


# -- VOSI capabilities ------------------------------------------------------------------------------


def test_skaha_capabilities_give_the_token_interface_of_each_standard() -> None:
    capabilities = parse_capabilities(SKAHA_CAPABILITIES)
    assert [c.standard_id for c in capabilities] == [
        "ivo://ivoa.net/std/VOSI#capabilities",
        SESSIONS_V0,
        SESSIONS_V1,
    ]
    assert capabilities[0].interfaces == (
        Interface("https://canfar.cam.uksrc.org/skaha/capabilities", (), "std"),
    )
    assert access_url(capabilities, SESSIONS_V1) == "https://canfar.cam.uksrc.org/skaha/v1/session"
    assert access_url(capabilities, SESSIONS_V1, security=COOKIE) == (
        "https://cookie.canfar.cam.uksrc.org/skaha/v1/session"
    )
    assert access_url(capabilities, SESSIONS_V1.upper()) is not None  # IDs compare without case
    assert access_url(capabilities, "ivo://example.org/std/nothing") is None


def test_an_interface_without_a_token_method_is_still_used_when_it_is_the_only_one() -> None:
    capabilities = (Capability(SESSIONS_V1, (Interface("https://h/skaha/v1/session", (None,)),)),)
    assert access_url(capabilities, SESSIONS_V1) == "https://h/skaha/v1/session"


def test_qualified_children_and_interfaces_without_an_address_are_read_as_vosi_means() -> None:
    document = b"""<v:capabilities xmlns:v="http://www.ivoa.net/xml/VOSICapabilities/v1.0">
      <v:capability standardID="x"><v:interface><v:accessURL>https://h/a</v:accessURL>
        <v:securityMethod/></v:interface><v:interface/></v:capability>
      <other/></v:capabilities>"""
    assert parse_capabilities(document) == (Capability("x", (Interface("https://h/a", (None,)),)),)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<capabilities xmlns="http://www.ivoa.net/xml/VOSICapabilities/v1.0">&lol3;</capabilities>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE c [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<capabilities xmlns="http://www.ivoa.net/xml/VOSICapabilities/v1.0">&x;</capabilities>"""
BARE_DOCTYPE = b"""<!DOCTYPE capabilities>
<capabilities xmlns="http://www.ivoa.net/xml/VOSICapabilities/v1.0"/>"""


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        (b"<capabilities><capability>", "is not well-formed XML (line 1, column 26)"),
        (b"", "is not well-formed XML"),
        (b"\x00\x01binary", "is not well-formed XML"),
        (BILLION_LAUGHS, "declares a DTD or entities"),
        (EXTERNAL_ENTITY, "declares a DTD or entities"),
        (BARE_DOCTYPE, "declares a DTD or entities"),
        (b"<html><body>Service moved</body></html>", "has the root element 'html', not capabilities"),
        (
            b'<capabilities xmlns="urn:other"/>',
            "in the namespace http://www.ivoa.net/xml/VOSICapabilities/v1.0",
        ),
        (b" " * (MAX_CAPABILITIES_BYTES + 1), f"more than the limit of {MAX_CAPABILITIES_BYTES}"),
    ],
    ids=[
        "truncated",
        "empty",
        "binary",
        "billion-laughs",
        "external-entity",
        "doctype",
        "html",
        "namespace",
        "huge",
    ],
)
def test_a_capabilities_document_that_cannot_be_read_gets_a_specific_error(
    document: bytes, problem: str
) -> None:
    with pytest.raises(DiscoveryError) as caught:
        parse_capabilities(document)
    assert problem in caught.value.message


@given(st.binary(max_size=2000) | st.text(max_size=500).map(lambda text: f"<{text}>".encode()))
@settings(max_examples=200, deadline=None)
def test_any_bytes_as_capabilities_give_capabilities_or_a_discovery_error(document: bytes) -> None:
    try:
        parse_capabilities(document)
    except DiscoveryError as error:
        assert len(error.message) < 600


def test_the_fake_skaha_capabilities_validate_against_the_vosi_schema() -> None:
    document = capabilities_document([
        ("ivo://ivoa.net/std/VOSI#capabilities", "http://127.0.0.1:1/skaha/capabilities", []),
        (SESSIONS_V1, "http://127.0.0.1:1/skaha/v1/session", [TOKEN, COOKIE, CERTIFICATE]),
        (SESSIONS_V0, "http://127.0.0.1:1/skaha/v0", [None]),
    ])  # fmt: skip
    validate("capabilities", document)
    assert skaha_endpoint(parse_capabilities(document), "v1") == SkahaEndpoint(
        "http://127.0.0.1:1/skaha", "v1"
    )


# -- skaha's endpoint -------------------------------------------------------------------------------


def skaha(*entries: tuple[str, str]) -> tuple[Capability, ...]:
    return tuple(Capability(sid, (Interface(url, (TOKEN,), "std"),)) for sid, url in entries)


def test_the_configured_version_is_taken_when_offered_else_the_other() -> None:
    both = parse_capabilities(SKAHA_CAPABILITIES)
    assert skaha_endpoint(both, "v1") == SkahaEndpoint("https://canfar.cam.uksrc.org/skaha", "v1")
    assert skaha_endpoint(both, "v0") == SkahaEndpoint("https://canfar.cam.uksrc.org/skaha", "v0")
    only_v0 = skaha((SESSIONS_V0, "https://old.example/skaha/v0/"))
    assert skaha_endpoint(only_v0, "v1") == SkahaEndpoint("https://old.example/skaha", "v0")


@pytest.mark.parametrize(
    ("capabilities", "problem"),
    [
        (skaha(), "describe no skaha sessions API"),
        (skaha(("ivo://ivoa.net/std/VOSI#capabilities", "https://h/c")), "describe no skaha sessions API"),
        (skaha((SESSIONS_V1, "https://h/skaha/sessions")), "does not end in /v1/session"),
        (skaha((SESSIONS_V1, "/v1/session")), "names no host"),
        (skaha((SESSIONS_V1, "http://evil.example/skaha/v1/session")), "uses http"),
    ],
)
def test_capabilities_without_a_usable_sessions_api_get_a_specific_error(
    capabilities: tuple[Capability, ...], problem: str
) -> None:
    with pytest.raises(DiscoveryError) as caught:
        skaha_endpoint(capabilities, "v1")
    assert problem in caught.value.message


# -- the settings -----------------------------------------------------------------------------------


def test_the_service_and_registry_replace_the_url() -> None:
    found = CanfarSettings(service=SKAHA, registry="https://reg.example/reg/resource-caps", token="t")
    assert found.discovered and not found.url and found.discovery_ttl_s == 600
    assert not CanfarSettings(url="https://ws-uv.canfar.net/skaha", token="t").discovered


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (
            {"url": "https://h/skaha", "service": SKAHA, "registry": "https://r/reg/resource-caps"},
            "either EB_CANFAR_URL or EB_CANFAR_SERVICE with EB_CANFAR_REGISTRY, not both",
        ),
        ({"url": "https://h/skaha", "registry": "https://r/x"}, "not both"),
        ({"service": SKAHA}, "EB_CANFAR_SERVICE needs EB_CANFAR_REGISTRY"),
        ({"registry": "https://r/reg/resource-caps"}, "EB_CANFAR_REGISTRY needs EB_CANFAR_SERVICE"),
        (
            {"service": "https://h/skaha", "registry": "https://r/x"},
            "EB_CANFAR_SERVICE: Value error, the service must start with ivo://",
        ),
        (
            {"service": SKAHA, "registry": "http://r.example/x"},
            "EB_CANFAR_REGISTRY: Value error, the registry URL uses http",
        ),
        ({"service": SKAHA, "registry": "https://r/x", "discovery_ttl_s": 0}, "EB_CANFAR_DISCOVERY_TTL_S"),
    ],
)
def test_the_service_settings_are_checked_with_a_clear_error(given: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match="invalid canfar settings") as caught:
        CanfarSettings.from_keywords(given | {"token": "t"})
    assert problem in str(caught.value)
    assert not isinstance(caught.value, ValidationError)  # from_keywords words it, naming variables
