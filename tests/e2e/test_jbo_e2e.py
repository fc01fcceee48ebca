"""The `jbo` pool end to end: the three services as processes, the launcher driving the fake JBO runner."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from shared.client import BrokerClient
from shared.messages import SessionEvent
from shared.models import DOCKER_CONTAINER_KIND, SIMPLE_COMPUTE_KIND, SIMPLE_DATA_KIND
from shared.ops.embedded import EmbeddedBroker
from tests.fakes.jbo_runner import FakeJboRunner
from tests.fakes.serve import serve_asgi

TOKEN = "e2e-jbo-token-not-for-logs"
OBSERVATION = "TS8004_C_001_20190801"
JBO_PHASES = ("ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING")


@pytest.fixture
def runner() -> Iterator[tuple[FakeJboRunner, str]]:
    fake = FakeJboRunner(TOKEN, step_s=0.1)
    base_url, stop = serve_asgi(fake)
    fake.base_url = base_url
    try:
        yield fake, base_url
    finally:
        stop()


@pytest.fixture
def jbo_broker(
    runner: tuple[FakeJboRunner, str], broker_factory: Callable[..., EmbeddedBroker]
) -> EmbeddedBroker:
    return broker_factory(
        EB_POOL_PLATFORM="jbo",
        EB_POOL_NAME="jbo",
        EB_JBO_URL=runner[1],
        EB_JBO_TOKEN=TOKEN,
        EB_JBO_POLL_S="0.2",
    )


def emcp_request(scenario: str) -> dict[str, Any]:
    return {
        "executable": {
            "kind": DOCKER_CONTAINER_KIND,
            "meta": {"name": f"emcp-{scenario}"},
            "image": {"locations": ["ghcr.io/miguelcarcamov/emerlin_casa_pipeline:latest"]},
            "command": ["-r", "calibration"],
            "environment": {
                "EMCP_TARGETS": "1252+5634",
                "EMCP_PHSCALS": "1302+5748",
                "FAKE_SCENARIO": scenario,
                "FAKE_FAIL_AT_STEP": "fluxscale",
            },
        },
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 2, "max": 2},
            "memory": {"min": 4, "max": 4},
        },
        "data": [
            {
                "kind": SIMPLE_DATA_KIND,
                "meta": {"name": "observation"},
                "location": f"/archive/emerlin/{OBSERVATION}/{OBSERVATION}_avg.ms",
            }
        ],
        "schedule": {"requested": {"duration": "PT10M"}},
    }


async def accepted_session(client: BrokerClient, scenario: str) -> str:
    offerset = await client.submit(emcp_request(scenario))
    assert offerset.result == "YES", offerset
    assert offerset.offers and offerset.offers[0].meta
    session_id = offerset.offers[0].meta.uuid
    assert session_id is not None
    assert (await client.accept(session_id)).applied
    return session_id


def texts(event: SessionEvent) -> list[str]:
    return [item.message or "" for item in event.messages]


async def test_emcp_job_completes_with_the_weblog(jbo_broker: EmbeddedBroker) -> None:
    async with BrokerClient(jbo_broker.url, jbo_broker.login("alice")) as client:
        session_id = await accepted_session(client, "ok")
        events = await client.wait_until_done(session_id, timeout=40)
    phases = tuple(event.phase for event in events)
    assert phases == (*JBO_PHASES, "COMPLETED"), phases
    final = events[-1]
    assert final.outputs["weblog"].endswith("weblog.tar")
    assert final.outputs["weblog_url"].endswith("/weblog")
    assert any("Output weblog" in text for text in texts(final))


async def test_pipeline_error_fails_with_the_platforms_reason(jbo_broker: EmbeddedBroker) -> None:
    async with BrokerClient(jbo_broker.url, jbo_broker.login("alice")) as client:
        session_id = await accepted_session(client, "pipeline_error")
        events = await client.wait_until_done(session_id, timeout=40)
    final = events[-1]
    assert final.phase == "FAILED", [e.phase for e in events]
    reasons = texts(final)
    assert any("the e-MERLIN pipeline failed at step fluxscale" in text for text in reasons), reasons
    assert any("Something went wrong" in text for text in reasons), reasons


async def test_cancel_while_running_reaches_the_runner(
    jbo_broker: EmbeddedBroker, runner: tuple[FakeJboRunner, str]
) -> None:
    fake, base_url = runner
    async with BrokerClient(jbo_broker.url, jbo_broker.login("alice")) as client:
        session_id = await accepted_session(client, "slow")
        seen: list[SessionEvent] = []

        async def until_running() -> None:
            async for event in client.events(session_id, until_done=True):
                seen.append(event)
                if event.phase == "RUNNING":
                    return

        await asyncio.wait_for(until_running(), 30)
        assert (await client.cancel(session_id)).applied
        events = await client.wait_until_done(session_id, timeout=30)
    assert events[-1].phase == "CANCELLED", [e.phase for e in events]
    (job,) = [job for job in fake.jobs.values() if job.spec["name"] == session_id]
    assert job.deleted and fake._view(job)["state"] == "CANCELLED"
    async with httpx.AsyncClient() as http:
        recorded = (await http.get(f"{base_url}/_fake/requests")).json()
    deletes = [r for r in recorded if r["method"] == "DELETE" and r["path"] == f"/jbo/v1/jobs/{job.job_id}"]
    assert deletes and all(r["headers"]["authorization"] == "Bearer <redacted>" for r in deletes)
