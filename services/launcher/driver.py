"""Drives one launched session through its phases on its platform, resumable after a restart.

Platform calls happen outside any transaction; each phase change is one transaction that updates
the run and queues its session event (deterministic id ``<session>:<phase>``), so a resumed driver
that repeats a step publishes nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from services.launcher import domain
from services.launcher import store as tables
from services.launcher.platforms.base import LaunchSpec, Platform, PlatformError, RunState, RunStatus
from services.launcher.preparation import prepare_components
from shared import subjects
from shared.bus.events import publish_phase
from shared.bus.runtime import ServiceRuntime
from shared.bus.store import Transaction
from shared.lifecycle import Phase, transition
from shared.messages import PreparationMeasured
from shared.models import MessageItem

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("execution_broker.launcher")

_TRANSIENT_RETRIES = 5
T = TypeVar("T")


class Drivers:
    def __init__(self, runtime: ServiceRuntime, platforms: Mapping[str, Platform], work_root: Path) -> None:
        self.runtime = runtime
        self.platforms = platforms
        self.work_root = work_root
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    def ensure(self, session_id: str) -> None:
        task = self._tasks.get(session_id)
        if task is None or task.done():
            self._wake[session_id] = asyncio.Event()
            self._tasks[session_id] = asyncio.create_task(self._drive(session_id), name=f"drive-{session_id}")

    def wake(self, session_id: str) -> None:
        event = self._wake.get(session_id)
        if event is not None:
            event.set()

    async def resume_all(self) -> None:
        for session_id in await tables.active(self.runtime.store):
            self.ensure(session_id)

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def spec_for(self, run: tables.Run) -> LaunchSpec:
        work_dir = self.work_root / run.session_id
        work_dir.mkdir(parents=True, exist_ok=True)
        return LaunchSpec(
            session_id=run.session_id,
            executable=run.spec["executable"],
            storage=run.spec.get("storage") or [],
            data=run.spec.get("data") or [],
            volumes=run.spec.get("volumes") or [],
            cores=run.spec["cores"],
            memory_gib=run.spec["memory_gib"],
            slot_end=datetime.fromisoformat(run.spec["end"]),
            work_dir=work_dir,
        )

    async def _drive(self, session_id: str) -> None:
        try:
            await self._steps(session_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("launcher: session %s failed unexpectedly", session_id)
            await self._finish(
                session_id, Phase.FAILED, f"internal launcher error: {type(exc).__name__}: {exc}"
            )
        finally:
            self._tasks.pop(session_id, None)
            self._wake.pop(session_id, None)

    async def _steps(self, session_id: str) -> None:
        run = await tables.read(self.runtime.store, session_id)
        if run is None or run.phase in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED):
            return
        # The driver runs outside any message handler: rejoin the session's trace so platform calls
        # and phase events appear under the request that created the session.
        otel_context.attach(propagate.extract(run.trace))
        with _tracer.start_as_current_span(f"run session {session_id}"):
            await self._run(session_id, run)

    async def _run(self, session_id: str, run: tables.Run) -> None:
        platform = self.platforms[run.platform]
        spec = self.spec_for(run)

        if run.phase in (Phase.ACCEPTED, Phase.WAITING, Phase.PREPARING):
            if run.cancel_reason:
                await self._finish(session_id, Phase.CANCELLED, f"Cancelled: {run.cancel_reason}")
                return
            await self._advance(session_id, Phase.PREPARING)
            began = time.monotonic()
            try:
                steps = await prepare_components(platform, spec, self._with_retries)
            except PlatformError as exc:
                await self._best_effort("release", session_id, lambda: platform.release(spec, None))
                await self._finish(session_id, Phase.FAILED, exc.message)
                return
            measured = PreparationMeasured(
                session_id=session_id, seconds=round(time.monotonic() - began, 3), steps=steps
            )
            await self._advance(session_id, Phase.AVAILABLE, measured=measured, pool=run.spec.get("pool"))
            reread = await tables.read(self.runtime.store, session_id)
            assert reread is not None
            run = reread

        if run.phase is Phase.AVAILABLE or run.handle is None:
            if run.cancel_reason:
                await self._best_effort("release", session_id, lambda: platform.release(spec, None))
                await self._finish(session_id, Phase.CANCELLED, f"Cancelled: {run.cancel_reason}")
                return
            try:
                handle = await self._with_retries(lambda: platform.start(spec))
            except PlatformError as exc:
                await self._best_effort("release", session_id, lambda: platform.release(spec, None))
                await self._finish(session_id, Phase.FAILED, exc.message)
                return
            await self._advance(session_id, Phase.RUNNING, handle=handle)
        else:
            handle = run.handle

        await self._monitor(session_id, platform, spec, handle)

    async def _monitor(self, session_id: str, platform: Platform, spec: LaunchSpec, handle: str) -> None:
        wake = self._wake.get(session_id) or asyncio.Event()
        while True:
            run = await tables.read(self.runtime.store, session_id)
            if run is None:
                return
            status: RunStatus | None = None
            if not run.cancel_reason:
                try:
                    status = await platform.poll(spec, handle)
                except PlatformError as exc:
                    if not exc.transient:
                        status = RunStatus(state=RunState.FAILED, message=exc.message)
            ending = domain.judge(status, run.cancel_reason, spec.slot_end, datetime.now(UTC))
            if ending is not None:
                if ending.needs_stop:
                    await self._best_effort("cancel", session_id, lambda: platform.cancel(spec, handle))
                await self._advance(session_id, Phase.RELEASING)
                await self._best_effort("release", session_id, lambda: platform.release(spec, handle))
                outputs = status.outputs if status else {}
                await self._finish(
                    session_id,
                    ending.phase,
                    ending.message,
                    outputs=outputs,
                    connectors=status.connectors if status else [],
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=platform.poll_interval(spec))
            wake.clear()

    async def _best_effort(self, what: str, session_id: str, call: Callable[[], Awaitable[None]]) -> None:
        """Stopping and releasing are retried; if the platform still refuses, the session still ends."""
        try:
            await self._with_retries(call)
        except PlatformError as exc:
            log.warning("launcher: %s of session %s failed: %s", what, session_id, exc.message)

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(_TRANSIENT_RETRIES):
            try:
                return await call()
            except PlatformError as exc:
                if not exc.transient or attempt == _TRANSIENT_RETRIES - 1:
                    raise
                await asyncio.sleep(min(30.0, 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    async def _advance(
        self,
        session_id: str,
        phase: Phase,
        *,
        handle: str | None = None,
        measured: PreparationMeasured | None = None,
        pool: str | None = None,
    ) -> None:
        async def work(tx: Transaction) -> None:
            run = await tables.get(tx, session_id)
            if run is None or not transition(run.phase, phase):
                return
            await tables.set_phase(tx, session_id, phase, handle)
            await publish_phase(tx, session_id, phase, run.trace)
            if measured is not None and pool:
                # The scheduler learns real preparation times from these, per source and pool.
                await tx.publish(
                    subjects.scheduler_command(pool, "measured"),
                    measured.to_bytes(),
                    f"measured:{session_id}",
                    trace_headers=run.trace or None,
                )

        await self.runtime.unit_of_work(work)

    async def _finish(
        self,
        session_id: str,
        phase: Phase,
        message: str | None,
        *,
        outputs: Mapping[str, str] | None = None,
        connectors: list[dict[str, str]] | None = None,
    ) -> None:
        async def work(tx: Transaction) -> None:
            run = await tables.get(tx, session_id)
            if run is None or not transition(run.phase, phase):
                return
            messages: list[MessageItem] = []
            if message:
                level = MessageItem.info if phase is Phase.COMPLETED else MessageItem.error
                messages.append(level("urn:session-ended", "${reason}", time=tx.now, reason=message))
            for name, location in (outputs or {}).items():
                messages.append(
                    MessageItem.info(
                        "urn:session-output",
                        "Output ${name}: ${location}",
                        time=tx.now,
                        name=name,
                        location=location,
                    )
                )
            await tables.set_phase(tx, session_id, phase)
            await publish_phase(
                tx, session_id, phase, run.trace, messages, dict(outputs or {}), connectors or []
            )

        await self.runtime.unit_of_work(work)
