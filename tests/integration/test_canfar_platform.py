"""The canfar platform against the fake skaha server: the platform contract, then one test per fault."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.launcher.platforms.canfar.platform import CanfarPlatform, session_name
from shared.platforms.contract import PlatformContract, PlatformFactory, launch, wait_for_final
from shared.platforms.port import LaunchSpec, Platform, PlatformError, RunState, RunStatus
from shared.platforms.registry import load_platform
from tests.fakes.serve import serve_asgi
from tests.fakes.skaha import FakeSkaha, SkahaConfig

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable"
DOCKER_KIND = f"{KINDS}/docker-container.yaml"
NOTEBOOK_KIND = f"{KINDS}/jupyter-notebook.yaml"
TOKEN = "tok-3f9a1c7e-very-secret"
IMAGE = "images.canfar.net/skaha/terminal:1.1.2"
RUN_TIMEOUT = 20.0
FAST = SkahaConfig(
    tokens={TOKEN: "alice"},
    pending_s=0.2,
    slow_start_pending_s=1.0,
    run_s=0.4,
    fail_after_s=0.3,
    term_s=0.3,
    ttl_headless_s=60.0,
)


@pytest.fixture
def fake() -> FakeSkaha:
    return FakeSkaha(replace(FAST, tokens=dict(FAST.tokens), forbidden_users=set()))


@pytest.fixture
def server(fake: FakeSkaha) -> Iterator[str]:
    base_url, stop = serve_asgi(fake)
    yield base_url
    stop()


@pytest.fixture
def skaha_url(server: str) -> str:
    return f"{server}/skaha"


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "token": TOKEN,
        "poll_s": "0.05",
        "timeout_s": "2",
        "backoff_s": "0.01",
        "pending_timeout_s": "30",
    } | extra


def container_spec(tmp_path: Path, scenario: str = "ok", name: str = "work", **env: str) -> LaunchSpec:
    return LaunchSpec(
        session_id=f"session-{tmp_path.name}-{name}",
        executable={
            "kind": DOCKER_KIND,
            "image": {"locations": [IMAGE], "digest": "sha256:" + "b" * 64},
            "command": ["python", "-c", "print(42)"],
            "environment": {"FAKE_SCENARIO": scenario, **env},
        },
        cores=2,
        memory_gib=4,
        slot_end=datetime.now(UTC) + timedelta(hours=1),
        work_dir=tmp_path / name,
    )


def session_id_of(handle: str) -> str:
    return str(json.loads(handle)["id"])


async def poll_until(platform: Platform, spec: LaunchSpec, handle: str, state: RunState) -> RunStatus:
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        status = await platform.poll(spec, handle)
        if status.state == state:
            return status
        assert not status.state.is_final, status
        assert time.monotonic() < deadline, f"still {status.state}"
        await asyncio.sleep(platform.poll_interval(spec))


async def wait_gone(fake: FakeSkaha, session_id: str) -> None:
    deadline = time.monotonic() + 5
    while fake.status(fake.sessions[session_id]) is not None:
        assert time.monotonic() < deadline, (
            f"session {session_id} is still {fake.status(fake.sessions[session_id])}"
        )
        await asyncio.sleep(0.05)


class TestCanfarPlatformContract(PlatformContract):
    run_timeout = RUN_TIMEOUT

    @pytest.fixture(autouse=True)
    def _remember_fake(self, fake: FakeSkaha) -> None:
        self.fake = fake

    @pytest.fixture
    def platform_factory(self, skaha_url: str) -> PlatformFactory:
        return lambda: CanfarPlatform(**settings(skaha_url))

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        return container_spec(tmp_path, "ok")

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        return container_spec(tmp_path, "fail_exit")

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        return container_spec(tmp_path, "ok", FAKE_RUN_S="forever")

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        session_id = session_id_of(handle)
        assert self.fake.recorded("DELETE", f"/skaha/v1/session/{session_id}")
        await wait_gone(self.fake, session_id)


# -- what is sent -----------------------------------------------------------------------------------


async def test_create_sends_type_name_image_resources_command_and_env(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path, "ok", GREETING="hello world")
    handle = await launch(platform, spec)
    (post,) = fake.recorded("POST", "/skaha/v1/session")
    form = post["form"]
    assert ("type", "headless") in form
    assert ("name", session_name(spec.session_id)) in form
    assert ("image", IMAGE) in form
    assert ("cores", "2") in form and ("ram", "4") in form
    assert ("cmd", "python") in form
    assert ("args", "-c print(42)") in form
    assert [v for k, v in form if k == "env"] == ["FAKE_SCENARIO=ok", "GREETING=hello world"]
    assert post["headers"]["authorization"] == "Bearer <redacted>"
    assert fake.sessions[session_id_of(handle)].name == session_name(spec.session_id)
    await platform.release(spec, handle)


def test_session_names_fit_skaha() -> None:
    for session_id in ("0b9e6a52-4c1f-4d8e-9a57-1f3c2b7d8e90", "Ünïcode_and spaces!" * 5, "---"):
        name = session_name(session_id)
        assert len(name) <= 40 and name == name.lower()
        assert all(c.isascii() and (c.isalnum() or c == "-") for c in name), name
    assert session_name("a" * 80) != session_name("a" * 81)


async def test_prepare_refuses_what_skaha_cannot_run(skaha_url: str, tmp_path: Path) -> None:
    platform = CanfarPlatform(**settings(skaha_url))
    spaced = container_spec(tmp_path)
    spaced = spaced.model_copy(update={"executable": spaced.executable | {"command": ["echo", "a b"]}})
    with pytest.raises(PlatformError, match="space-separated"):
        await platform.prepare(spaced)
    too_big = container_spec(tmp_path).model_copy(update={"cores": 64})
    with pytest.raises(PlatformError, match="64 cores: it offers 1 to 16"):
        await platform.prepare(too_big)
    other = container_spec(tmp_path).model_copy(update={"executable": {"kind": f"{KINDS}/singularity.yaml"}})
    with pytest.raises(PlatformError, match="cannot run executables of kind"):
        await platform.prepare(other)
    pinned = container_spec(tmp_path)
    pinned = pinned.model_copy(
        update={"executable": pinned.executable | {"image": {"locations": [IMAGE], "digest": "sha256:c"}}}
    )
    with pytest.raises(PlatformError, match=r"has digest sha256:b+, not the requested sha256:c"):
        await platform.prepare(pinned)
    notebook = container_spec(tmp_path).model_copy(
        update={"executable": {"kind": NOTEBOOK_KIND, "location": "https://example.org/a.ipynb"}}
    )
    with pytest.raises(PlatformError, match="EB_CANFAR_STORAGE_URL and EB_CANFAR_STORAGE_USER are not set"):
        await platform.prepare(notebook)
    staging = CanfarPlatform(**settings(skaha_url, storage_url="https://arc.invalid", storage_user="alice"))
    with pytest.raises(PlatformError, match="EB_CANFAR_NOTEBOOK_IMAGE"):
        await staging.prepare(notebook)
    with pytest.raises(PlatformError, match="EB_CANFAR_URL"):
        await CanfarPlatform(token=TOKEN).prepare(container_spec(tmp_path))


async def test_a_started_session_is_adopted_not_created_twice(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    spec = container_spec(tmp_path, FAKE_RUN_S="forever")
    first = await launch(CanfarPlatform(**settings(skaha_url)), spec)
    again = await CanfarPlatform(**settings(skaha_url)).start(spec)  # a retried start, after a restart
    assert session_id_of(again) == session_id_of(first)
    assert len(fake.sessions) == 1
    await CanfarPlatform(**settings(skaha_url)).cancel(spec, again)


def test_the_registry_finds_the_plugin(skaha_url: str) -> None:
    platform = load_platform("canfar", url=skaha_url, token=TOKEN, some_setting_for_another_plugin="x")
    assert isinstance(platform, CanfarPlatform) and platform.name == "canfar"


# -- outcomes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["Completed", "Succeeded"])
async def test_logs_are_fetched_into_the_work_dir_when_it_ends(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path, legacy: bool
) -> None:
    fake.config.legacy_status = legacy
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path, "ok", GREETING="hi")
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    log = Path(status.outputs["log"])
    assert log.parent == spec.work_dir
    text = await asyncio.to_thread(log.read_text)
    assert "ENV GREETING=hi" in text and text.rstrip().endswith("done")
    # The logs were read at once: a single GET ?view=logs, right after the status said it ended.
    assert len([r for r in fake.recorded("GET") if r["query"] == "view=logs"]) == 1
    await platform.release(spec, handle)
    assert fake.status(fake.sessions[session_id_of(handle)]) is None  # release deleted it (and its logs)
    assert await platform.poll(spec, handle) == status


@pytest.mark.parametrize(
    ("scenario", "alias", "reason"),
    [
        (
            "fail_exit",
            False,
            "BackoffLimitExceeded: Job has reached the specified backoff limit (exit code 3)",
        ),
        ("fail_exit", True, "BackoffLimitExceeded"),
        ("oom", False, "OOMKilled: Container main was OOMKilled"),
    ],
    ids=["exit-Failed", "exit-Error", "oom"],
)
async def test_a_failed_job_fails_with_the_platforms_reason(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path, scenario: str, alias: bool, reason: str
) -> None:
    fake.config.status_error_alias = alias
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path, scenario)
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message is not None
    assert f"ended {'Error' if alias else 'Failed'}" in status.message and reason in status.message
    if scenario == "fail_exit":
        assert "exited with code 3" in status.message  # the log's tail
    assert set(status.outputs) == {"log", "events"}


async def test_a_session_that_vanishes_fails_saying_so(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path, "vanish_after_done", FAKE_RUN_S="0.5")
    handle = await launch(platform, spec)
    await poll_until(platform, spec, handle, RunState.RUNNING)
    await wait_gone(fake, session_id_of(handle))  # it ended and went between two polls
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message and "disappeared (HTTP 404) after it was last seen Running" in status.message


async def test_a_session_stuck_pending_fails_after_the_pending_timeout_and_is_deleted(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**settings(skaha_url, pending_timeout_s="0.6"))
    spec = container_spec(tmp_path, "stuck_pending")
    handle = await launch(platform, spec)
    assert (await platform.poll(spec, handle)).state == RunState.PREPARING
    started = time.monotonic()
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED and status.message
    assert "longer than the pending timeout (0.6 s" in status.message
    assert "Failed to pull image" in status.message and "the session was deleted" in status.message
    assert time.monotonic() - started < 5
    session_id = session_id_of(handle)
    assert fake.recorded("DELETE", f"/skaha/v1/session/{session_id}")
    await wait_gone(fake, session_id)


async def test_a_slow_start_is_not_a_stuck_one(skaha_url: str, tmp_path: Path) -> None:
    platform = CanfarPlatform(**settings(skaha_url, pending_timeout_s="5"))
    spec = container_spec(tmp_path, "slow_start")
    handle = await launch(platform, spec)
    assert (await platform.poll(spec, handle)).state == RunState.PREPARING
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


async def test_cancel_really_sends_delete(server: str, skaha_url: str, tmp_path: Path) -> None:
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path, FAKE_RUN_S="forever")
    handle = await launch(platform, spec)
    await poll_until(platform, spec, handle, RunState.RUNNING)
    await platform.cancel(spec, handle)
    async with httpx.AsyncClient() as client:
        requests = (await client.get(f"{server}/_fake/requests")).json()
        sessions = (await client.get(f"{server}/_fake/sessions")).json()
    session_id = session_id_of(handle)
    deletes = [
        r for r in requests if r["method"] == "DELETE" and r["path"] == f"/skaha/v1/session/{session_id}"
    ]
    assert len(deletes) == 1 and deletes[0]["status"] == 200
    assert {s["id"]: s["status"] for s in sessions}[session_id] in ("Terminating", "gone")
    status = await platform.poll(spec, handle)
    assert status.state == RunState.CANCELLED and "log" in status.outputs  # the logs so far were kept


# -- faults -----------------------------------------------------------------------------------------


async def test_a_401_rereads_the_token_file_and_goes_on(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    fake.config.tokens = {"old-token": "alice", "new-token": "alice"}
    platform = CanfarPlatform(**settings(skaha_url, token=None, token_file=str(token_file)))
    spec = container_spec(tmp_path, FAKE_RUN_S="forever")
    handle = await launch(platform, spec)
    await poll_until(platform, spec, handle, RunState.RUNNING)
    del fake.config.tokens["old-token"]  # revoked part-way; a renewed token is written to the file
    token_file.write_text("new-token\n")
    assert (await platform.poll(spec, handle)).state == RunState.RUNNING
    statuses = [r["status"] for r in fake.recorded("GET", f"/skaha/v1/session/{session_id_of(handle)}")]
    assert statuses[-2:] == [401, 200]
    await platform.cancel(spec, handle)


async def test_a_401_that_persists_fails_clearly_without_the_token(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    platform = CanfarPlatform(**settings(skaha_url, token=None, token_file=str(token_file)))
    spec = container_spec(tmp_path, FAKE_RUN_S="forever")
    handle = await launch(platform, spec)
    fake.config.tokens.clear()
    with pytest.raises(PlatformError) as caught:
        await platform.poll(spec, handle)
    error = caught.value
    assert not error.transient
    assert "HTTP 401" in error.message and str(token_file) in error.message
    assert TOKEN not in error.message and TOKEN not in caplog.text
    statuses = [r["status"] for r in fake.recorded("GET", f"/skaha/v1/session/{session_id_of(handle)}")]
    assert statuses == [401, 401]  # re-read and retried exactly once


async def test_a_403_fails_clearly_without_the_token(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.config.forbidden_users.add("alice")
    platform = CanfarPlatform(**settings(skaha_url))
    with pytest.raises(PlatformError) as caught:
        await platform.prepare(container_spec(tmp_path))
    error = caught.value
    assert not error.transient
    assert "HTTP 403" in error.message and "EB_CANFAR_TOKEN" in error.message
    assert "not authorized" in error.message
    assert TOKEN not in error.message and TOKEN not in caplog.text


async def test_a_500_on_create_is_retried_once_and_makes_one_session(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    fake.add_fault({"match": {"method": "POST", "path": "/skaha/v1/session"}, "status": 500, "times": 1})
    fake.add_fault({"match": {"method": "GET", "path": "/skaha/v1/session/*"}, "status": 500, "times": 1})
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path)
    handle = await launch(platform, spec)
    assert [r["status"] for r in fake.recorded("POST", "/skaha/v1/session")] == [500, 200]
    assert len(fake.sessions) == 1
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED
    assert [r["status"] for r in fake.recorded("GET", "/skaha/v1/session/*")][:2] == [500, 200]


async def test_a_503_retry_after_is_honoured(fake: FakeSkaha, skaha_url: str, tmp_path: Path) -> None:
    platform = CanfarPlatform(**settings(skaha_url))
    spec = container_spec(tmp_path)
    handle = await launch(platform, spec)
    path = f"/skaha/v1/session/{session_id_of(handle)}"
    fake.add_fault({"match": {"method": "GET", "path": path}, "status": 503, "headers": {"Retry-After": "1"}})
    await platform.poll(spec, handle)
    first, second = fake.recorded("GET", path)[:2]
    assert (first["status"], second["status"]) == (503, 200)
    assert second["at"] - first["at"] >= 1.0


async def test_a_429_retry_after_is_honoured_on_create(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    fake.add_fault(
        {
            "match": {"method": "POST", "path": "/skaha/v1/session"},
            "status": 429,
            "headers": {"Retry-After": "1"},
        }
    )
    platform = CanfarPlatform(**settings(skaha_url))
    await launch(platform, container_spec(tmp_path))
    first, second = fake.recorded("POST", "/skaha/v1/session")
    assert (first["status"], second["status"]) == (429, 200) and second["at"] - first["at"] >= 1.0
    assert len(fake.sessions) == 1


async def test_a_hang_longer_than_the_client_timeout_is_retried(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**settings(skaha_url, timeout_s="0.3"))
    spec = container_spec(tmp_path)
    handle = await launch(platform, spec)
    path = f"/skaha/v1/session/{session_id_of(handle)}"
    fake.add_fault({"match": {"method": "GET", "path": path}, "delay_s": 1.0})
    await platform.poll(spec, handle)
    assert len(fake.recorded("GET", path)) == 2


async def test_a_server_that_keeps_failing_is_a_transient_error(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**settings(skaha_url, timeout_s="0.2", retries="3"))
    spec = container_spec(tmp_path)
    handle = await launch(platform, spec)
    path = f"/skaha/v1/session/{session_id_of(handle)}"
    fake.add_fault({"match": {"method": "GET", "path": path}, "delay_s": 1.0, "times": None})
    with pytest.raises(PlatformError) as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient and "after 3 tries" in caught.value.message
    fake.faults.clear()
    fake.add_fault({"match": {"method": "GET", "path": path}, "status": 503, "times": None})
    with pytest.raises(PlatformError) as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient and "HTTP 503" in caught.value.message


async def test_a_create_that_hangs_makes_one_session(fake: FakeSkaha, skaha_url: str, tmp_path: Path) -> None:
    # The server creates the session but answers after the client gave up: no duplicate.
    fake.add_fault({"match": {"method": "POST", "path": "/skaha/v1/session"}, "delay_s": 1.0})
    platform = CanfarPlatform(**settings(skaha_url, timeout_s="0.3"))
    spec = container_spec(tmp_path)
    handle = await launch(platform, spec)
    assert list(fake.sessions) == [session_id_of(handle)]
    assert len(fake.recorded("POST", "/skaha/v1/session")) == 1
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


# -- API version and tracing ------------------------------------------------------------------------


async def test_the_v0_api_behind_the_setting(fake: FakeSkaha, skaha_url: str, tmp_path: Path) -> None:
    fake.config.versions = ("v0",)  # an older deployment: only /skaha/v0
    platform = CanfarPlatform(**settings(skaha_url, api="v0"))
    spec = container_spec(tmp_path)
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED
    await platform.release(spec, handle)
    assert fake.requests and all(r["path"].startswith("/skaha/v0/") for r in fake.requests)
    assert all(r["status"] == 200 for r in fake.requests)
    with pytest.raises(ValueError, match="EB_CANFAR_API"):
        CanfarPlatform(**settings(skaha_url, api="v2"))


async def test_every_http_call_is_a_client_span_in_the_callers_trace(
    fake: FakeSkaha, skaha_url: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    platform = CanfarPlatform(**settings(skaha_url, tracer_provider=provider))
    spec = container_spec(tmp_path)
    fake.add_fault({"match": {"method": "GET", "path": "/skaha/v1/session/*"}, "status": 500, "times": 1})
    with provider.get_tracer("test").start_as_current_span("run session") as parent:
        handle = await launch(platform, spec)
        await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
        await platform.release(spec, handle)
    spans = [s for s in exporter.get_finished_spans() if s.name != "run session"]
    assert len(spans) == len(fake.requests)
    trace_id = parent.get_span_context().trace_id
    for span in spans:
        assert span.kind == SpanKind.CLIENT
        assert span.context is not None and span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
        attributes = dict(span.attributes or {})
        assert attributes["http.method"] in ("GET", "POST", "DELETE")
        assert str(attributes["url.full"]).startswith(skaha_url)
        assert TOKEN not in json.dumps(attributes)
    codes = [s.attributes["http.status_code"] for s in spans if s.attributes]
    assert codes.count(500) == 1 and codes.count(200) == len(spans) - 1
    names = {s.name for s in spans}
    assert (
        "GET /v1/session/{id}" in names and "POST /v1/session" in names and "DELETE /v1/session/{id}" in names
    )
