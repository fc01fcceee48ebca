"""The contract every platform plugin must satisfy, as a reusable test base class.

A plugin's test module (this project's, or another distribution's) subclasses `PlatformContract`:

    from shared.platforms.contract import PlatformContract

    class TestMyPlatform(PlatformContract):
        ...

and provides the fixtures `platform_factory`, `good_spec`, `failing_spec` and `slow_spec` (and, if it
can, overrides `assert_run_stopped` to check on the platform itself that a cancelled run is really
gone). pytest collects the inherited tests for each subclass; this module has no `Test` class of its
own, so nothing runs from here directly.

This is the one module of the package that needs pytest and pytest-asyncio (the `contract` extra); the
services never import it. The async tests carry their `asyncio` mark, so they run in pytest-asyncio's
strict mode as well as in its auto mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.platforms.port import LaunchSpec, Platform, RunState, RunStatus
from shared.platforms.registry import declared_capabilities

PlatformFactory = Callable[[], Platform]


async def wait_for_final(platform: Platform, spec: LaunchSpec, handle: str, limit_s: float) -> RunStatus:
    """Poll like the launcher does (at the platform's own interval) until the run has ended."""
    deadline = time.monotonic() + limit_s
    while True:
        status = await platform.poll(spec, handle)
        if status.state.is_final:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"run still {status.state} after {limit_s} s")
        await asyncio.sleep(platform.poll_interval(spec))


async def launch(platform: Platform, spec: LaunchSpec) -> str:
    await platform.prepare(spec)
    return await platform.start(spec)


class PlatformContract:
    # Generous: a real platform may queue a run for a while before it starts.
    run_timeout: float = 60.0

    # -- what a plugin's test module provides ---------------------------------------------------

    @pytest.fixture
    def platform_factory(self) -> PlatformFactory:
        """A callable that builds a NEW platform instance (as a restarted launcher would)."""
        raise NotImplementedError

    @pytest.fixture
    def platform(self, platform_factory: PlatformFactory) -> Platform:
        return platform_factory()

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        """A run that succeeds quickly."""
        raise NotImplementedError

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        """A run that fails quickly."""
        raise NotImplementedError

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        """A run that would go on for minutes unless cancelled."""
        raise NotImplementedError

    async def wait_until_busy(self, platform: Platform, spec: LaunchSpec, handle: str) -> None:
        """Wait until the slow run is really running; plugins may wait for more than RUNNING."""
        deadline = time.monotonic() + self.run_timeout
        while (await platform.poll(spec, handle)).state != RunState.RUNNING:
            assert time.monotonic() < deadline, "the slow run never reached RUNNING"
            await asyncio.sleep(platform.poll_interval(spec))

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        """Check on the platform itself that nothing of the run is left; override per plugin."""

    # -- the contract ---------------------------------------------------------------------------

    def test_is_a_platform(self, platform: Platform, good_spec: LaunchSpec) -> None:
        assert isinstance(platform, Platform)
        assert platform.name
        assert platform.poll_interval(good_spec) > 0

    def test_declares_the_kinds_it_runs(
        self, platform: Platform, good_spec: LaunchSpec, slow_spec: LaunchSpec
    ) -> None:
        declared = declared_capabilities(type(platform))
        for spec in (good_spec, slow_spec):
            assert spec.executable_kind in declared.executable_kinds
            assert {str(data.get("kind")) for data in spec.data} <= declared.data_kinds

    @pytest.mark.asyncio
    async def test_good_run_succeeds_with_outputs(self, platform: Platform, good_spec: LaunchSpec) -> None:
        handle = await launch(platform, good_spec)
        assert isinstance(handle, str) and handle
        status = await wait_for_final(platform, good_spec, handle, self.run_timeout)
        assert status.state == RunState.SUCCEEDED, status.message
        assert status.outputs
        for location in status.outputs.values():
            if "://" not in location:
                assert await asyncio.to_thread(Path(location).exists), location
        await platform.release(good_spec, handle)

    @pytest.mark.asyncio
    async def test_a_watched_run_is_seen_to_end(self, platform: Platform, good_spec: LaunchSpec) -> None:
        handle = await launch(platform, good_spec)
        exited = platform.exited(good_spec, handle)
        if exited is not None:  # None: this platform is only polled
            try:
                await asyncio.wait_for(asyncio.shield(exited), self.run_timeout)
            finally:
                exited.cancel()
        status = await wait_for_final(platform, good_spec, handle, self.run_timeout)
        assert status.state == RunState.SUCCEEDED, status.message
        await platform.release(good_spec, handle)
        await platform.aclose()

    @pytest.mark.asyncio
    async def test_failing_run_fails_with_a_message(
        self, platform: Platform, failing_spec: LaunchSpec
    ) -> None:
        handle = await launch(platform, failing_spec)
        status = await wait_for_final(platform, failing_spec, handle, self.run_timeout)
        assert status.state == RunState.FAILED
        assert status.message and status.message.strip()
        await platform.release(failing_spec, handle)

    @pytest.mark.asyncio
    async def test_cancel_really_stops_a_slow_run(self, platform: Platform, slow_spec: LaunchSpec) -> None:
        handle = await launch(platform, slow_spec)
        await self.wait_until_busy(platform, slow_spec, handle)
        started = time.monotonic()
        await platform.cancel(slow_spec, handle)
        status = await wait_for_final(platform, slow_spec, handle, self.run_timeout)
        assert status.state == RunState.CANCELLED
        assert status.message
        await self.assert_run_stopped(slow_spec, handle)
        assert time.monotonic() - started < self.run_timeout
        # Idempotent: repeating cancel and release changes nothing.
        await platform.cancel(slow_spec, handle)
        await platform.release(slow_spec, handle)
        await platform.release(slow_spec, handle)
        assert (await platform.poll(slow_spec, handle)).state == RunState.CANCELLED
        await self.assert_run_stopped(slow_spec, handle)

    @pytest.mark.asyncio
    async def test_cancel_and_release_after_the_end_are_harmless(
        self, platform: Platform, good_spec: LaunchSpec
    ) -> None:
        handle = await launch(platform, good_spec)
        status = await wait_for_final(platform, good_spec, handle, self.run_timeout)
        assert status.state == RunState.SUCCEEDED, status.message
        await platform.cancel(good_spec, handle)
        await platform.cancel(good_spec, handle)
        await platform.release(good_spec, handle)
        await platform.release(good_spec, handle)
        assert await platform.poll(good_spec, handle) == status

    @pytest.mark.asyncio
    async def test_release_without_a_handle_is_harmless(
        self, platform: Platform, good_spec: LaunchSpec
    ) -> None:
        await platform.release(good_spec, None)
        await platform.release(good_spec, None)

    @pytest.mark.asyncio
    async def test_a_new_instance_finds_a_finished_run(
        self, platform: Platform, platform_factory: PlatformFactory, failing_spec: LaunchSpec
    ) -> None:
        handle = await launch(platform, failing_spec)
        status = await wait_for_final(platform, failing_spec, handle, self.run_timeout)
        restarted = platform_factory()
        assert await restarted.poll(failing_spec, handle) == status
        await restarted.release(failing_spec, handle)
        await restarted.aclose()

    @pytest.mark.asyncio
    async def test_a_new_instance_finds_and_cancels_a_running_run(
        self, platform: Platform, platform_factory: PlatformFactory, slow_spec: LaunchSpec
    ) -> None:
        handle = await launch(platform, slow_spec)
        await self.wait_until_busy(platform, slow_spec, handle)
        restarted = platform_factory()
        assert (await restarted.poll(slow_spec, handle)).state == RunState.RUNNING
        await restarted.cancel(slow_spec, handle)
        assert (
            await wait_for_final(restarted, slow_spec, handle, self.run_timeout)
        ).state == RunState.CANCELLED
        await self.assert_run_stopped(slow_spec, handle)
        # The instance that started the run agrees.
        assert (await platform.poll(slow_spec, handle)).state == RunState.CANCELLED
        await restarted.release(slow_spec, handle)
        await restarted.aclose()
