"""The canfar platform configured by IVOA identifier and registry: the fake registry's resource-caps
and the fake skaha's capabilities lead it to the sessions API; what it found is reused, and read again
after a 404 (the service moved) or once the TTL has passed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import tests.integration.test_canfar_platform as plain
from services.launcher.platforms.canfar.platform import CanfarPlatform
from shared.ivoa.registry import MAX_RESOURCE_CAPS_BYTES
from shared.platforms.contract import PlatformFactory, launch, wait_for_final
from shared.platforms.port import LaunchSpec, PlatformError, RunState
from tests.fakes.registry import FakeRegistry
from tests.fakes.serve import serve_asgi
from tests.fakes.skaha import FakeSkaha
from tests.integration.test_canfar_platform import FAST, RUN_TIMEOUT, TOKEN, container_spec, session_id_of

SKAHA = "ivo://canfar.cam.uksrc.org/skaha"
RESOURCE_CAPS = "/reg/resource-caps"


@pytest.fixture
def fake() -> FakeSkaha:
    return FakeSkaha(replace(FAST, tokens=dict(FAST.tokens), forbidden_users=set()))


@pytest.fixture
def skaha_server(fake: FakeSkaha) -> Iterator[str]:
    base_url, stop = serve_asgi(fake)
    yield base_url
    stop()


@pytest.fixture
def registry(skaha_server: str) -> FakeRegistry:
    return FakeRegistry({
        "ivo://cadc.nrc.ca/arc": "https://ws-uv.canfar.net/arc/capabilities",
        SKAHA: f"{skaha_server}/skaha/capabilities",
    })  # fmt: skip


@pytest.fixture
def registry_url(registry: FakeRegistry) -> Iterator[str]:
    base_url, stop = serve_asgi(registry)
    yield base_url + RESOURCE_CAPS
    stop()


def discovered(registry_url: str, **extra: Any) -> dict[str, Any]:
    return {
        "service": SKAHA,
        "registry": registry_url,
        "token": TOKEN,
        "poll_s": "0.05",
        "timeout_s": "2",
        "backoff_s": "0.01",
    } | extra


def reads(
    registry: FakeRegistry, fake: FakeSkaha, capabilities: str = "/skaha/capabilities"
) -> tuple[int, int]:
    return len(registry.recorded("GET", RESOURCE_CAPS)), len(fake.recorded("GET", capabilities))


class TestDiscoveredCanfarContract(plain.TestCanfarPlatformContract):
    """The whole platform contract, with the base URL found through the registry."""

    @pytest.fixture
    def platform_factory(self, registry_url: str) -> PlatformFactory:
        return lambda: CanfarPlatform(**discovered(registry_url))


async def test_launches_read_the_registry_once_and_never_send_it_the_token(
    fake: FakeSkaha, registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**discovered(registry_url))
    specs = [container_spec(tmp_path, "ok", name=f"run{i}") for i in range(3)]
    handles = await asyncio.gather(*(launch(platform, spec) for spec in specs))
    for spec, handle in zip(specs, handles, strict=True):
        status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
        assert status.state == RunState.SUCCEEDED, status
    assert reads(registry, fake) == (1, 1)
    assert len(fake.recorded("POST", "/skaha/v1/session")) == 3
    discovery = [*registry.recorded(), *fake.recorded("GET", "/skaha/capabilities")]
    assert discovery and all("authorization" not in r["headers"] for r in discovery)
    await platform.aclose()


async def test_a_404_reads_the_registry_again_and_follows_the_service_where_it_moved(
    fake: FakeSkaha, registry: FakeRegistry, skaha_server: str, registry_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**discovered(registry_url))
    running = container_spec(tmp_path, "ok", name="before", FAKE_RUN_S="forever")
    handle = await launch(platform, running)
    assert (await platform.poll(running, handle)).state in (RunState.PREPARING, RunState.RUNNING)
    fake.move("/platform/skaha")
    registry.entries[SKAHA] = f"{skaha_server}/platform/skaha/capabilities"
    # The session started before the move is still polled (the old path's 404 is not its end)...
    assert (await platform.poll(running, handle)).state in (RunState.PREPARING, RunState.RUNNING)
    session_id = session_id_of(handle)
    assert [r["status"] for r in fake.recorded("GET", f"/skaha/v1/session/{session_id}")][-1] == 404
    assert fake.recorded("GET", f"/platform/skaha/v1/session/{session_id}")[-1]["status"] == 200
    # ...and new ones go to the new place, with no further reads.
    after = container_spec(tmp_path, "ok", name="after")
    status = await wait_for_final(platform, after, await launch(platform, after), RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status
    assert fake.recorded("POST", "/platform/skaha/v1/session")
    assert len(registry.recorded("GET", RESOURCE_CAPS)) == 2
    await platform.cancel(running, handle)
    assert fake.recorded("DELETE", f"/platform/skaha/v1/session/{session_id}")


async def test_a_404_that_is_only_a_404_keeps_what_was_found(
    fake: FakeSkaha, registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**discovered(registry_url))
    spec = container_spec(tmp_path, "ok")
    handle = await launch(platform, spec)
    fake.add_fault({"match": {"method": "GET", "path": "/skaha/v1/session/*"}, "status": 404, "times": 1})
    assert not (await platform.poll(spec, handle)).state.is_final  # one 404 is not the end yet
    assert reads(registry, fake) == (2, 2)  # read again, found in the same place: not resent
    assert len(fake.recorded("GET", f"/skaha/v1/session/{session_id_of(handle)}")) == 1
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status


async def test_the_registry_is_read_again_once_the_ttl_has_passed(
    fake: FakeSkaha, registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    platform = CanfarPlatform(**discovered(registry_url, discovery_ttl_s="0.5"))
    await launch(platform, container_spec(tmp_path, "ok", name="first"))
    await launch(platform, container_spec(tmp_path, "ok", name="second"))
    assert reads(registry, fake) == (1, 1)
    await asyncio.sleep(0.6)
    await launch(platform, container_spec(tmp_path, "ok", name="third"))
    assert reads(registry, fake) == (2, 2)


async def test_a_failed_read_after_the_ttl_keeps_what_was_found(
    fake: FakeSkaha,
    registry: FakeRegistry,
    registry_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    platform = CanfarPlatform(**discovered(registry_url, discovery_ttl_s="0.3", attempts="2"))
    await launch(platform, container_spec(tmp_path, "ok", name="first"))
    registry.add_fault({"match": {"path": RESOURCE_CAPS}, "status": 503, "times": None})
    await asyncio.sleep(0.4)
    with caplog.at_level(logging.WARNING):
        handle = await launch(platform, container_spec(tmp_path, "ok", name="second"))
    assert session_id_of(handle) in fake.sessions
    assert "cannot find the CANFAR service ivo://canfar.cam.uksrc.org/skaha" in caplog.text
    assert "still using http://127.0.0.1" in caplog.text
    assert len(registry.recorded("GET", RESOURCE_CAPS)) == 3  # the first read, then 2 attempts


async def test_an_old_deployment_found_through_the_registry_runs_on_v0(
    fake: FakeSkaha, registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    fake.config.versions = ("v0",)
    platform = CanfarPlatform(**discovered(registry_url))
    spec = container_spec(tmp_path, "ok")
    handle = await launch(platform, spec)
    assert fake.recorded("POST", "/skaha/v0/session")
    assert '"api": "v0"' in handle
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


async def launch_fails(registry_url: str, spec: LaunchSpec, **extra: Any) -> PlatformError:
    with pytest.raises(PlatformError) as caught:
        await launch(CanfarPlatform(**discovered(registry_url, **extra)), spec)
    assert caught.value.message.startswith(
        f"cannot find the CANFAR service {SKAHA} through the registry {registry_url}: "
    )
    assert TOKEN not in str(caught.value)
    return caught.value


async def test_a_service_the_registry_does_not_list_is_a_clear_error(
    registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    del registry.entries[SKAHA]
    error = await launch_fails(registry_url, container_spec(tmp_path))
    assert error.message.endswith(f"the registry lists no {SKAHA}") and not error.transient


async def test_a_registry_that_does_not_answer_is_a_transient_error(
    registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    registry.add_fault({"match": {"path": RESOURCE_CAPS}, "status": 503, "times": None})
    error = await launch_fails(registry_url, container_spec(tmp_path), attempts="2")
    assert "HTTP 503" in error.message and "gave up after 2 attempts" in error.message and error.transient


async def test_a_huge_resource_caps_is_refused_at_the_limit(
    registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    registry.body = b"# padding\n" * (MAX_RESOURCE_CAPS_BYTES // 10 + 1)
    error = await launch_fails(registry_url, container_spec(tmp_path))
    assert f"is larger than {MAX_RESOURCE_CAPS_BYTES} bytes" in error.message


async def test_capabilities_that_are_not_xml_are_refused(
    fake: FakeSkaha, registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    fake.add_fault({"match": {"path": "/skaha/capabilities"}, "status": 200, "body": "<html><p>maintenance"})
    error = await launch_fails(registry_url, container_spec(tmp_path))
    assert "the capabilities document is not well-formed XML" in error.message


async def test_a_registry_pointing_to_plain_http_elsewhere_is_refused(
    registry: FakeRegistry, registry_url: str, tmp_path: Path
) -> None:
    registry.entries[SKAHA] = "http://skaha.example.org/skaha/capabilities"
    error = await launch_fails(registry_url, container_spec(tmp_path))
    assert "uses http: only https is allowed" in error.message


async def test_a_pool_with_neither_way_to_the_service_says_both(tmp_path: Path) -> None:
    with pytest.raises(PlatformError) as caught:
        await CanfarPlatform(token=TOKEN).prepare(container_spec(tmp_path))
    assert "set EB_CANFAR_URL" in caught.value.message
    assert "or EB_CANFAR_SERVICE (its ivo:// identifier) with EB_CANFAR_REGISTRY" in caught.value.message
