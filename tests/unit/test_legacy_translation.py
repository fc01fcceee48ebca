"""Older client documents (issue 15, item 5): each translation rule, the refusals, the bounds, and the
WARN that travels with a translated request into its answer (shared/models/legacy.py)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.offers.domain import NeedsQuote, Rejected, build_offerset, decide_request
from shared.client import read_request_file
from shared.messages import Hold
from shared.models import (
    JUPYTER_NOTEBOOK_KIND,
    MAX_DOCUMENT_BYTES,
    SIMPLE_COMPUTE_KIND,
    SIMPLE_STORAGE_KIND,
    SIMPLE_VOLUME_KIND,
    InvalidRequest,
    MessageItem,
    MessageLevel,
    parse_execution_request,
    to_jsonable,
)
from shared.models.codes import LEGACY_FORM, MIXED_GENERATIONS, RESOURCE_NOT_FOUND, SYNTAX_FAIL, TOO_LARGE
from shared.models.legacy import EARLIER_FORM, V1_0_FORM, Translation, Untranslatable, translate
from shared.models.limits import MAX_COMPONENTS
from shared.models.serialise import MAX_DOCUMENT_DEPTH
from tests.unit.offers_policy import NOW, POLICY

REQUESTS = Path(__file__).resolve().parents[1] / "data" / "requests"
OLD = "https://www.purl.org/ivoa.net/EB/schema/types/"
NOTEBOOK = {"kind": JUPYTER_NOTEBOOK_KIND, "meta": {"name": "nb"}, "location": "/srv/hello.ipynb"}


def warnings_of(translation: Translation) -> list[str]:
    assert all(w.kind == LEGACY_FORM and w.level == MessageLevel.WARN for w in translation.warnings)
    return [w.message or "" for w in translation.warnings]


def refusal(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(Untranslatable) as raised:
        translate(document, NOW)
    messages = raised.value.messages
    assert messages and all(m.level == MessageLevel.ERROR for m in messages)
    return [(m.kind, m.message or "") for m in messages]


# -- 1.0.7 passes unchanged -----------------------------------------------------------------------


def test_a_current_document_is_not_translated() -> None:
    document = {
        "executable": NOTEBOOK,
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "volumes": [{"kind": SIMPLE_VOLUME_KIND, "resource": "d"}]},
        "costs": [{"type": "urn:ivoa:calycopis:cost:monetary"}],  # a cost's `type` is its own field
    }
    translation = translate(document, NOW)
    assert translation.document == document
    assert translation.warnings == ()


# -- the earlier form: one rule at a time ---------------------------------------------------------


def test_type_becomes_kind_everywhere() -> None:
    document = {
        "executable": {"type": OLD + "executable/jupyter-notebook-1.0", "location": "/srv/a.ipynb"},
        "storage": [{"type": OLD + "storage/simple-storage-resource-1.0", "meta": {"name": "s"}}],
        "data": [{"type": OLD + "data/simple-data-resource-1.0", "meta": {"name": "d"}, "location": "/x"}],
    }
    translation = translate(document, NOW)
    assert translation.document["executable"]["kind"] == OLD + "executable/jupyter-notebook-1.0"
    assert "type" not in translation.document["executable"]
    assert translation.document["storage"][0]["kind"] == OLD + "storage/simple-storage-resource-1.0"
    assert translation.document["data"][0]["kind"] == OLD + "data/simple-data-resource-1.0"
    assert warnings_of(translation) == [
        f"The request uses {EARLIER_FORM}: 'type' is now 'kind' (at executable, storage[0], data[0]); "
        "it was translated to schema 1.0.7"
    ]
    assert "type" in document["executable"], "the caller's mapping is never changed"


def test_computer_becomes_compute() -> None:
    translation = translate({"executable": NOTEBOOK, "computer": {"kind": SIMPLE_COMPUTE_KIND}}, NOW)
    assert translation.document == {"executable": NOTEBOOK, "compute": {"kind": SIMPLE_COMPUTE_KIND}}
    assert warnings_of(translation) == [
        f"The request uses {EARLIER_FORM}: 'computer' is now 'compute'; it was translated to schema 1.0.7"
    ]


def test_a_flat_name_moves_into_meta() -> None:
    document = {
        "executable": {"kind": JUPYTER_NOTEBOOK_KIND, "name": "nb", "location": "/srv/a.ipynb"},
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "name": "c", "meta": {"description": "kept"}},
        "data": [{"kind": OLD + "data/simple-data-resource-1.0", "name": "d", "meta": {"name": "d"}}],
    }
    translation = translate(document, NOW)
    assert translation.document["executable"]["meta"] == {"name": "nb"}
    assert "name" not in translation.document["executable"]
    assert translation.document["compute"]["meta"] == {"description": "kept", "name": "c"}
    assert translation.document["data"][0]["meta"] == {"name": "d"}  # the same name twice is one name
    assert "(at executable, compute, data[0])" in warnings_of(translation)[0]


def test_the_earlier_example_is_translated_with_a_warn_per_rule() -> None:
    document = read_request_file(REQUESTS / "legacy-earlier-form-notebook.yaml")
    request = parse_execution_request(document, now=NOW)
    assert request.executable is not None and request.executable.kind == JUPYTER_NOTEBOOK_KIND
    assert request.executable.meta is not None and request.executable.meta.name == "hello-notebook-2025"
    assert request.compute is not None and request.compute.meta is not None
    assert request.compute.meta.name == "hello-computer-2025"
    texts = [m.message or "" for m in request.translated or []]
    assert [m.kind for m in request.translated or []] == [LEGACY_FORM] * 3
    assert "'computer' is now 'compute'" in texts[0]
    assert "'type' is now 'kind' (at executable, computer)" in texts[1]
    assert "a flat 'name' is now 'meta.name' (at executable, computer)" in texts[2]
    assert all(m.time == NOW for m in request.translated or [])


# -- the v1.0 form ----------------------------------------------------------------------------------


def volume(name: str, path: str, resource: str) -> dict[str, Any]:
    return {"kind": SIMPLE_VOLUME_KIND, "meta": {"name": name}, "path": path, "resource": resource}


def test_named_volumes_are_mounted_in_the_order_compute_names_them() -> None:
    a, b = volume("a", "/a", "s"), volume("b", "/b", "s")
    document = {
        "executable": NOTEBOOK,
        "compute": {"kind": SIMPLE_COMPUTE_KIND, "volumes": ["b", "a"]},
        "storage": [{"kind": SIMPLE_STORAGE_KIND, "meta": {"name": "s"}}],
        "volumes": [a, b],
    }
    translation = translate(document, NOW)
    assert "volumes" not in translation.document
    assert translation.document["compute"]["volumes"] == [b, a]
    assert warnings_of(translation) == [
        f"The request uses {V1_0_FORM}: the top-level volumes are now mounted in compute.volumes (b, a); "
        "it was translated to schema 1.0.7"
    ]


def test_the_v1_0_example_parses_to_a_mount_of_its_storage() -> None:
    document = read_request_file(REQUESTS / "legacy-v1.0-top-level-volumes.yaml")
    request = parse_execution_request(document, now=NOW)
    assert request.compute is not None
    mounts = request.compute.volumes or []
    assert [(m.path, m.mode, m.resource) for m in mounts] == [("/scratch", "READWRITE", "scratch")]
    assert [m.kind for m in request.translated or []] == [LEGACY_FORM]


def test_both_legacy_forms_at_once_translate_together() -> None:
    document = {
        "executable": {"type": OLD + "executable/jupyter-notebook-1.0", "name": "nb", "location": "/a"},
        "computer": {"type": OLD + "compute/simple-compute-resource-1.0", "volumes": ["v"]},
        "storage": [{"type": OLD + "storage/simple-storage-resource-1.0", "name": "s"}],
        "volumes": [{"type": OLD + "volume/simple-volume-mount-1.0", "name": "v", "resource": "s"}],
    }
    translation = translate(document, NOW)
    mount = translation.document["compute"]["volumes"][0]
    assert mount == {"kind": OLD + "volume/simple-volume-mount-1.0", "meta": {"name": "v"}, "resource": "s"}
    assert len(translation.warnings) == 4
    request = parse_execution_request(document, now=NOW)
    assert request.compute is not None and request.compute.volumes is not None
    assert request.compute.volumes[0].kind == SIMPLE_VOLUME_KIND


def test_an_empty_declaration_beside_current_mounts_is_dropped() -> None:
    mounts = [{"kind": SIMPLE_VOLUME_KIND, "resource": "s"}]
    translation = translate({"compute": {"volumes": mounts}, "volumes": []}, NOW)
    assert translation.document == {"compute": {"volumes": mounts}}
    assert translation.warnings == ()


# -- what cannot be translated: a specific NO -------------------------------------------------------


def test_kind_and_type_on_one_component() -> None:
    found = refusal({"executable": {**NOTEBOOK, "type": OLD + "executable/jupyter-notebook-1.0"}})
    assert found == [
        (
            MIXED_GENERATIONS,
            "The request mixes schema generations: executable has both 'kind' (schema 1.0.7) and 'type', "
            f"from {EARLIER_FORM}; send only 'kind'",
        )
    ]


def test_kind_here_and_type_there() -> None:
    found = refusal(
        {"executable": NOTEBOOK, "data": [{"type": OLD + "data/simple-data-resource-1.0", "location": "/x"}]}
    )
    assert found[0][0] == MIXED_GENERATIONS
    expected = f"'type' at data[0] is from {EARLIER_FORM}, but 'kind' at executable is schema 1.0.7"
    assert expected in found[0][1]


def test_compute_and_computer() -> None:
    found = refusal({"executable": NOTEBOOK, "compute": {}, "computer": {}})
    assert found[0][0] == MIXED_GENERATIONS and "both 'compute' (schema 1.0.7) and 'computer'" in found[0][1]


def test_a_flat_name_that_disagrees_with_meta_name() -> None:
    found = refusal({"executable": {**NOTEBOOK, "name": "other"}})
    assert found[0][0] == MIXED_GENERATIONS
    assert "executable has a flat 'name' [other]" in found[0][1] and "'meta.name' [nb]" in found[0][1]


def test_top_level_volumes_and_a_mount_in_compute() -> None:
    found = refusal(
        {
            "compute": {"volumes": ["a", {"kind": SIMPLE_VOLUME_KIND, "resource": "s"}]},
            "volumes": [volume("a", "/a", "s")],
        }
    )
    assert found[0][0] == MIXED_GENERATIONS and "compute.volumes[1] is a volume mount" in found[0][1]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"compute": {"volumes": ["a", "z"]}, "volumes": [volume("a", "/a", "s")]},
            "No volume named [z] is declared in the top-level volumes, for compute.volumes[1]",
        ),
        ({"compute": {"volumes": ["z"]}}, "No volume named [z] is declared for compute.volumes[0]"),
        (
            {"compute": {"volumes": ["a"]}, "volumes": [volume("a", "/a", "s"), volume("b", "/b", "s")]},
            "The volume [b] declared at volumes[1] is not named in compute.volumes",
        ),
        ({"volumes": [volume("a", "/a", "s")]}, "The volume [a] declared at volumes[0] is not named"),
        (
            {"computer": {"volumes": ["z"]}, "volumes": []},
            "No volume named [z] is declared in the top-level volumes, for computer.volumes[0]",
        ),
    ],
    ids=["undeclared", "no-declarations", "not-mounted", "no-compute", "computer"],
)
def test_a_volume_named_but_not_declared_or_declared_but_not_named(
    document: dict[str, Any], expected: str
) -> None:
    found = refusal(document)
    assert any(kind == RESOURCE_NOT_FOUND and expected in text for kind, text in found), found


def test_other_volume_problems_are_named() -> None:
    twice = {"compute": {"volumes": ["a", "a"]}, "volumes": [volume("a", "/", "s")]}
    texts = [text for _, text in refusal(twice)]
    assert any("compute.volumes[1] names volume [a] again" in t for t in texts), texts
    texts = [text for _, text in refusal({"compute": {"volumes": []}, "volumes": [{"path": "/a"}]})]
    assert any("volumes[0] has no meta.name" in t for t in texts), texts
    texts = [text for _, text in refusal({"compute": {"volumes": []}, "volumes": "a"})]
    assert any("it must be a list of volume mounts" in t for t in texts), texts
    named = [volume("a", "/a", "s"), volume("a", "/b", "s")]
    texts = [text for _, text in refusal({"compute": {"volumes": ["a"]}, "volumes": named})]
    assert any("Duplicate volume name [a] at volumes[1]" in t for t in texts), texts


# -- the bounds hold after translation ----------------------------------------------------------------


def test_too_many_declared_volumes() -> None:
    declared = [volume(f"v{i}", f"/v{i}", "s") for i in range(MAX_COMPONENTS + 1)]
    found = refusal({"compute": {"volumes": ["v0"]}, "volumes": declared})
    assert found == [
        (
            TOO_LARGE,
            f"Too many items at volumes: {MAX_COMPONENTS + 1}, more than the limit of {MAX_COMPONENTS}",
        )
    ]


def test_moving_a_volume_down_a_level_cannot_pass_the_depth_limit() -> None:
    # volumes[0].x... is exactly at the limit; under compute.volumes it is one level deeper.
    deep: Any = "leaf"
    for _ in range(MAX_DOCUMENT_DEPTH - 3):
        deep = [deep]
    declared = {**volume("v", "/v", "s"), "x": deep}
    raw = json.dumps({"executable": NOTEBOOK, "compute": {"volumes": ["v"]}, "volumes": [declared]})
    with pytest.raises(InvalidRequest) as raised:
        parse_execution_request(raw.encode(), now=NOW)
    assert [(m.kind, m.message) for m in raised.value.messages] == [
        (
            SYNTAX_FAIL,
            f"Translated from {V1_0_FORM} to schema 1.0.7, the request is not usable: the document is nested "
            f"more than {MAX_DOCUMENT_DEPTH} levels deep (at compute.volumes[0].x[0][0][0][0]...)",
        )
    ]


def test_moving_names_into_meta_cannot_pass_the_size_limit() -> None:
    items = [{"type": OLD + "data/simple-data-resource-1.0", "name": f"d{i}"} for i in range(MAX_COMPONENTS)]
    executable = {"type": OLD + "executable/jupyter-notebook-1.0"}
    document: dict[str, Any] = {"executable": executable, "data": items}
    head = len(json.dumps(document, separators=(",", ":")))
    document["executable"]["location"] = "/" + "x" * (MAX_DOCUMENT_BYTES - head - len(',"location":"/"') - 10)
    raw = json.dumps(document, separators=(",", ":")).encode()
    assert len(raw) <= MAX_DOCUMENT_BYTES
    with pytest.raises(InvalidRequest) as raised:
        parse_execution_request(raw, now=NOW)
    texts = [m.message or "" for m in raised.value.messages if m.kind == TOO_LARGE]
    assert texts and "to schema 1.0.7, the request is" in texts[0]
    assert f"more than the limit of {MAX_DOCUMENT_BYTES} bytes" in texts[0]


# -- through the parser and the offers service -------------------------------------------------------


def test_a_client_cannot_send_its_own_warnings() -> None:
    forged = to_jsonable(MessageItem.warn(LEGACY_FORM, "forged"))
    request = parse_execution_request({"executable": NOTEBOOK, "translated": [forged]}, now=NOW)
    assert request.translated is None


def test_a_translated_request_refused_for_another_reason_lists_the_warn_first() -> None:
    document = {"executable": {"type": OLD + "executable/jupyter-notebook-1.0"}}  # no location
    with pytest.raises(InvalidRequest) as raised:
        parse_execution_request(document, now=NOW)
    kinds = [m.kind for m in raised.value.messages]
    assert kinds[0] == LEGACY_FORM and "urn:missing-required-value" in kinds[1:]


def test_the_offers_service_answers_a_legacy_request_yes_with_the_warn() -> None:
    raw = json.dumps(read_request_file(REQUESTS / "legacy-earlier-form-notebook.yaml")).encode()
    decision = decide_request(raw, "req-legacy", "alice", NOW, POLICY)
    assert isinstance(decision, NeedsQuote), decision
    # As the store keeps it until the pools have quoted.
    stored = type(decision.request).model_validate_json(decision.request.model_dump_json())
    start = NOW + timedelta(minutes=5)
    hold = Hold(
        session_id="0b1e4b86-8f53-4b0e-9f46-2bb8d1b3c6f7",
        pool="local",
        start=start,
        end=start + timedelta(minutes=5),
        cores=1,
        memory_gib=1,
        prepare_s=60,
    )
    offerset = build_offerset("req-legacy", stored, [hold], [], NOW + timedelta(minutes=5), NOW, POLICY)
    assert offerset.result == "YES"
    assert offerset.meta is not None and offerset.meta.messages is not None
    assert [(m.kind, m.level) for m in offerset.meta.messages] == [(LEGACY_FORM, MessageLevel.WARN)] * 3
    no = build_offerset("req-legacy", stored, [], ["no capacity"], NOW, NOW, POLICY)
    assert no.meta is not None and next(m.kind for m in no.meta.messages or []) == LEGACY_FORM


def test_the_offers_service_answers_a_mixed_request_no() -> None:
    raw = (REQUESTS.parent / "malformed" / "type-instead-of-kind.json").read_bytes()
    decision = decide_request(raw, "req-mixed", "alice", datetime(2026, 1, 1, tzinfo=UTC), POLICY)
    assert isinstance(decision, Rejected)
    assert decision.offerset.meta is not None
    assert [m.kind for m in decision.offerset.meta.messages or []] == [MIXED_GENERATIONS]


# -- hypothesis: only our own error, whatever the input -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
VOCABULARY = ["kind", "type", "name", "meta", "volumes", "compute", "computer", "resource", "path"]
keys = st.sampled_from(VOCABULARY) | st.text(max_size=6)
words = st.sampled_from(["a", "b", "v", OLD + "executable/jupyter-notebook-1.0", JUPYTER_NOTEBOOK_KIND])
legacy_values = st.recursive(
    st.none() | words | st.integers() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=15,
)
component = st.dictionaries(keys, legacy_values, max_size=5)
legacy_like = st.fixed_dictionaries(
    {},
    optional={
        "executable": component | legacy_values,
        "compute": st.fixed_dictionaries({}, optional={"volumes": st.lists(words | component, max_size=3)})
        | component,
        "computer": component | legacy_values,
        "storage": st.lists(component, max_size=3) | legacy_values,
        "data": st.lists(component, max_size=3) | legacy_values,
        "volumes": st.lists(component, max_size=3) | legacy_values,
    },
)


def translates_or_explains(document: dict[str, Any]) -> None:
    before = copy.deepcopy(document)
    try:
        translation = translate(document, NOW)
    except Untranslatable as error:
        assert error.messages and all(m.message for m in error.messages)
    else:
        assert all(w.kind == LEGACY_FORM for w in translation.warnings)
        assert "computer" not in translation.document or "compute" not in translation.document
    assert document == before or document != document  # unchanged (NaN never equals itself)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, json_values, max_size=6))
def test_arbitrary_json_only_raises_untranslatable(document: dict[str, Any]) -> None:
    translates_or_explains(document)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(legacy_like)
def test_legacy_like_documents_only_raise_untranslatable(document: dict[str, Any]) -> None:
    translates_or_explains(document)
    try:
        parse_execution_request(document, now=NOW)
    except InvalidRequest as error:
        assert error.messages
