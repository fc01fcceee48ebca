"""Drives one launched session through its phases on its platform, resumable after a restart.

Platform calls happen outside any transaction. A phase change updates the run and queues its
session event (deterministic id ``<session>:<phase>``, checked against the run's phase by
`publish_phase`) in a transaction, so a resumed driver that repeats a step publishes nothing twice.
Changes with no platform work worth showing between them share one transaction, each still checked
by the lifecycle's transition table and published as its own event, in order: AVAILABLE with
RUNNING (right after start), RELEASING with the end (when the release is quick). A session thus
costs three transactions, not five.

While a run goes on, connectors its polls report (an interactive notebook's URL, known once the
platform runs it) are published when they first appear or change (`publish_connectors`: an event of
the phase the session is in), so they are shown while the session runs, not only at its end.

A run's end is seen at once where the platform can tell (`Platform.exited`, the local platform's
pidfd); otherwise the driver polls at the platform's interval, and never sleeps past the slot's end.

The driver does not retry platform calls. Retries live in one place, the HTTP layer the plugins
share (`shared.http`): each HTTP request to a platform is retried there within its call's policy,
and a transient PlatformError that reaches the driver has already spent it. With the platforms'
defaults (5 attempts, 30 s per request, a 120 s budget), one HTTP call to a platform makes at most
5 requests and lasts at most 150 s; a platform operation (prepare, start, cancel, release) makes its
few HTTP calls one after the other. A transient failure of `poll` is not retried either: the run is
polled again at the next interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from services.launcher import domain
from services.launcher import store as tables
from services.launcher.preparation import prepare_components
from shared import subjects
from shared.bus.events import publish_connectors, publish_phase
from shared.bus.runtime import TransactionRunner
from shared.bus.store import Transaction
from shared.lifecycle import TERMINAL, Phase
from shared.messages import PreparationMeasured
from shared.models import MessageItem
from shared.platforms.port import LaunchSpec, Platform, PlatformError, RunState, RunStatus, StartsOnce
from shared.subjects import LauncherFact

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("execution_broker.launcher")

# While a platform watches a run's exit, polls are only a safety net: they back off up to this.
_WATCHED_POLL_MAX_S = 5.0
# A release that takes longer than this is shown as RELEASING while it lasts.
_QUIET_RELEASE_S = 0.1


class Drivers:
    def __init__(
        self, runtime: TransactionRunner | None, platforms: Mapping[str, Platform], work_root: Path
    ) -> None:
        # The runtime runs the handlers that drive these, so the composition root may bind it later.
        self._runtime = runtime
        self.platforms = platforms
        self.work_root = work_root
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}

    def bind(self, runtime: TransactionRunner) -> None:
        self._runtime = runtime

    @property
    def runtime(self) -> TransactionRunner:
        if self._runtime is None:
            raise RuntimeError("the drivers are not bound to a runtime")
        return self._runtime

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
        # No run is driven any more, so nothing uses the platforms: free their connections.
        for name, platform in self.platforms.items():
            try:
                await platform.aclose()
            except Exception:
                log.exception("launcher: closing the %s platform failed", name)

    def spec_for(self, run: tables.Run) -> LaunchSpec:
        work_dir = self.work_root / run.session_id
        # Private: a run's files are its owner's, and other runs of the same user id must not read them.
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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
        # AVAILABLE is recorded with what follows it (RUNNING, or the end), in the same transaction:
        # a crash before that commit re-runs the preparation, which is idempotent.
        available: list[Step] = []

        if run.phase in (Phase.ACCEPTED, Phase.WAITING, Phase.PREPARING):
            if run.cancel_reason:
                await self._record(session_id, Step(Phase.CANCELLED, f"Cancelled: {run.cancel_reason}"))
                return
            await self._record(session_id, Step(Phase.PREPARING))
            began = time.monotonic()
            try:
                steps = await prepare_components(platform, spec)
            except PlatformError as exc:
                await self._best_effort("release", session_id, lambda: platform.release(spec, None))
                await self._record(session_id, Step(Phase.FAILED, exc.message))
                return
            measured = PreparationMeasured(
                session_id=session_id, seconds=round(time.monotonic() - began, 3), steps=steps
            )
            available = [Step(Phase.AVAILABLE, measured=measured, pool=run.spec.get("pool"))]
            # A cancel may have come in while the components were being prepared.
            _, cancel_reason = await tables.cancel_reason(self.runtime.store, session_id)
            run = dataclasses.replace(run, phase=Phase.PREPARING, cancel_reason=cancel_reason)

        if available or run.phase is Phase.AVAILABLE or run.handle is None:
            if run.cancel_reason:
                await self._best_effort("release", session_id, lambda: platform.release(spec, None))
                await self._record(
                    session_id, *available, Step(Phase.CANCELLED, f"Cancelled: {run.cancel_reason}")
                )
                return
            try:
                handle = await self._start(session_id, platform, spec)
            except PlatformError as exc:
                await self._best_effort("release", session_id, lambda: platform.release(spec, None))
                await self._record(session_id, *available, Step(Phase.FAILED, exc.message))
                return
            await self._record(session_id, *available, Step(Phase.RUNNING, handle=handle))
        else:
            handle = run.handle

        await self._monitor(session_id, platform, spec, handle)

    async def _start(self, session_id: str, platform: Platform, spec: LaunchSpec) -> str:
        """Start the run once, even across a crash between the platform's start and the commit of
        its handle: a platform whose start must not be repeated (`StartsOnce`) names its run up
        front (`start_name`); the name is committed first, and a resumed start looks for that run
        (`adopt`) before it makes another."""
        if not isinstance(platform, StartsOnce):
            return await platform.start(spec)
        name = platform.start_name(spec)
        recorded = await tables.start_intent(self.runtime.store, session_id)
        if recorded is not None:
            adopted = await platform.adopt(spec, recorded)
            if adopted is not None:
                log.info("launcher: session %s adopted the run its interrupted start made", session_id)
                return adopted
        if recorded != name:

            async def record(tx: Transaction) -> None:
                await tables.record_start_intent(tx, session_id, name)

            await self.runtime.unit_of_work(record)
        return await platform.start(spec)

    async def _monitor(self, session_id: str, platform: Platform, spec: LaunchSpec, handle: str) -> None:
        wake = self._wake.get(session_id) or asyncio.Event()
        # Platforms that can tell when a run ends (the local one, by a pidfd) wake the loop at once,
        # so its polls only back off; the others (exited is None) are polled at their own interval.
        exited = platform.exited(spec, handle)
        backoff = platform.poll_interval(spec)
        shown: list[dict[str, str]] = []
        try:
            while True:
                found, cancel_reason = await tables.cancel_reason(self.runtime.store, session_id)
                if not found:
                    return
                status: RunStatus | None = None
                if not cancel_reason:
                    try:
                        status = await platform.poll(spec, handle)
                    except PlatformError as exc:
                        if not exc.transient:
                            status = RunStatus(state=RunState.FAILED, message=exc.message)
                now = datetime.now(UTC)
                ending = domain.judge(status, cancel_reason, spec.slot_end, now)
                if ending is not None:
                    await self._end(session_id, platform, spec, handle, ending, status)
                    return
                if status is not None and status.connectors and status.connectors != shown:
                    await self._show_connectors(session_id, status.connectors)
                    shown = list(status.connectors)
                watched = exited is not None and not exited.done()
                delay = platform.poll_interval(spec)
                if watched:
                    backoff = min(backoff * 2, max(delay, _WATCHED_POLL_MAX_S))
                    delay = backoff
                # Never sleep past the end of the booked slot: the run is stopped right then.
                delay = min(delay, max(0.0, (spec.slot_end - now).total_seconds()) + 0.01)
                await _pause(wake, exited if watched else None, delay)
        finally:
            if exited is not None:
                exited.cancel()

    async def _end(
        self,
        session_id: str,
        platform: Platform,
        spec: LaunchSpec,
        handle: str,
        ending: domain.Ending,
        status: RunStatus | None,
    ) -> None:
        """Stop the run if needed, release it, and record RELEASING and the end.

        A release that is over within `_QUIET_RELEASE_S` (the local platform's, for a run that has
        ended) is recorded with the end in one transaction; a longer one shows as RELEASING meanwhile.
        Either way each phase is published once, in order. A crash before the last commit repeats
        the release, which is idempotent.
        """
        if ending.needs_stop:
            await self._best_effort("cancel", session_id, lambda: platform.cancel(spec, handle))
        final = Step(
            ending.phase,
            ending.message,
            outputs=status.outputs if status else {},
            connectors=status.connectors if status else [],
        )
        release = asyncio.ensure_future(
            self._best_effort("release", session_id, lambda: platform.release(spec, handle))
        )
        try:
            done, _ = await asyncio.wait({release}, timeout=_QUIET_RELEASE_S)
            if done:
                release.result()
                await self._record(session_id, Step(Phase.RELEASING), final)
                return
            await self._record(session_id, Step(Phase.RELEASING))
            await release
            await self._record(session_id, final)
        finally:
            release.cancel()

    async def _show_connectors(self, session_id: str, connectors: list[dict[str, str]]) -> None:
        async def work(tx: Transaction) -> None:
            run = await tables.get(tx, session_id)
            if run is None or run.phase in TERMINAL:
                return
            await publish_connectors(tx, session_id, run.owner, run.phase, run.trace, connectors)

        await self.runtime.unit_of_work(work)

    async def _best_effort(self, what: str, session_id: str, call: Callable[[], Awaitable[None]]) -> None:
        """Stopping and releasing (retried in the HTTP layer): if the platform still refuses, the
        session still ends."""
        try:
            await call()
        except PlatformError as exc:
            log.warning("launcher: %s of session %s failed: %s", what, session_id, exc.message)

    async def _finish(self, session_id: str, phase: Phase, message: str | None) -> None:
        await self._record(session_id, Step(phase, message))

    async def _record(self, session_id: str, *steps: Step) -> None:
        """Apply phase changes in one transaction, each one checked by the lifecycle's transition
        table and published as its own event, in order; a change already made is skipped."""

        async def work(tx: Transaction) -> None:
            run = await tables.get(tx, session_id)
            if run is None:
                return
            phase = run.phase
            for step in steps:
                published = await publish_phase(
                    tx,
                    session_id,
                    run.owner,
                    phase,
                    step.phase,
                    run.trace,
                    step.messages(tx.now),
                    dict(step.outputs),
                    list(step.connectors),
                )
                if not published:
                    continue
                phase = step.phase
                await tables.set_phase(tx, session_id, step.phase, step.handle)
                if step.measured is not None and step.pool:
                    # The scheduler learns real preparation times from these, per source and pool.
                    await tx.publish(
                        subjects.launcher_event(step.pool, LauncherFact.MEASURED),
                        step.measured.to_bytes(),
                        f"measured:{session_id}",
                        trace_headers=run.trace or None,
                    )

        await self.runtime.unit_of_work(work)


@dataclass(frozen=True)
class Step:
    """One phase change of a run, with what its event carries."""

    phase: Phase
    message: str | None = None
    handle: str | None = None
    measured: PreparationMeasured | None = None
    pool: str | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    connectors: list[dict[str, str]] = field(default_factory=list)

    def messages(self, now: datetime) -> list[MessageItem]:
        if self.phase not in TERMINAL:
            return []
        items: list[MessageItem] = []
        if self.message:
            level = MessageItem.info if self.phase is Phase.COMPLETED else MessageItem.error
            items.append(level("urn:session-ended", "${reason}", time=now, reason=self.message))
        for name, location in self.outputs.items():
            items.append(
                MessageItem.info(
                    "urn:session-output",
                    "Output ${name}: ${location}",
                    time=now,
                    name=name,
                    location=location,
                )
            )
        return items


async def _pause(wake: asyncio.Event, exited: asyncio.Future[None] | None, timeout: float) -> None:
    """Until a wake (a cancel), the run's exit, or the timeout, whichever comes first."""
    if not wake.is_set():
        woken = asyncio.ensure_future(wake.wait())
        waiters: set[asyncio.Future[Any]] = {woken}
        if exited is not None:
            waiters.add(exited)
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
    wake.clear()
