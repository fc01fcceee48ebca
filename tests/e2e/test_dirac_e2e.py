"""Through the bus with the real services, on the `dirac` platform against the fake slurmrestd:
a job that completes, a job that fails (the platform's reason reaches the session), and a cancel
that really DELETEs the Slurm job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.client import BrokerClient
from shared.models import DOCKER_CONTAINER_KIND, LOCAL_COMMAND_KIND, SIMPLE_COMPUTE_KIND
from shared.ops.embedded import EmbeddedBroker
from tests.fakes.serve import serve_asgi
from tests.fakes.slurmrestd import FakeSlurm, Token

TOKEN = "e2e-token"


@pytest.fixture
def slurm() -> Iterator[tuple[FakeSlurm, str]]:
    fake = FakeSlurm(tokens={TOKEN: Token("alice")})
    url, stop = serve_asgi(fake)
    yield fake, url
    stop()


@pytest.fixture
def dirac_broker(
    broker_factory: Callable[..., EmbeddedBroker], slurm: tuple[FakeSlurm, str]
) -> EmbeddedBroker:
    _, url = slurm
    return broker_factory(
        EB_POOL_PLATFORM="dirac",
        EB_POOL_NAME="dirac",
        # Room for the three sessions at once, whatever the offers round the cores up to.
        EB_POOL_CORES="16",
        EB_DIRAC_URL=url,
        EB_DIRAC_USER="alice",
        EB_DIRAC_TOKEN=TOKEN,
        EB_DIRAC_PARTITION="cosma8",
        EB_DIRAC_ACCOUNT="dp999",
        EB_DIRAC_POLL_S="0.2",
    )


def request(executable: dict[str, Any]) -> dict[str, Any]:
    return {
        "executable": executable,
        "compute": {
            "kind": SIMPLE_COMPUTE_KIND,
            "cores": {"min": 2, "max": 2},
            "memory": {"min": 1, "max": 1},
        },
        "schedule": {"requested": {"duration": "PT10M"}},
    }


def command(*argv: str, **environment: str) -> dict[str, Any]:
    return {"kind": LOCAL_COMMAND_KIND, "command": list(argv), "environment": environment}


BOOKED_CORES: dict[str, int] = {}


async def accepted(client: BrokerClient, document: dict[str, Any]) -> str:
    offerset = await client.submit(document)
    assert offerset.result == "YES", offerset.meta
    assert offerset.offers and offerset.offers[0].meta
    session_id = offerset.offers[0].meta.uuid
    assert session_id is not None
    compute = offerset.offers[0].compute
    cores = getattr(compute, "cores", None)
    BOOKED_CORES[session_id] = int(getattr(cores, "min", 0) or 0)
    assert (await client.accept(session_id)).applied
    return session_id


async def reached(client: BrokerClient, session_id: str, phase: str) -> None:
    # The generator is finalised by the loop's shutdown_asyncgens (it unsubscribes then).
    async for event in client.events(session_id):
        if event.phase == phase:
            return


def texts(event: Any) -> list[str]:
    return [m.message or "" for m in event.messages]


async def test_sessions_run_fail_and_cancel_on_dirac(
    dirac_broker: EmbeddedBroker, slurm: tuple[FakeSlurm, str]
) -> None:
    fake, _ = slurm
    began = time.monotonic()
    async with BrokerClient(dirac_broker.url, dirac_broker.login("alice")) as client:
        ok_id = await accepted(client, request(command("echo", "hello from slurm")))
        container_id = await accepted(
            client,
            request(
                {
                    "kind": DOCKER_CONTAINER_KIND,
                    "image": {"locations": ["busybox:1"]},
                    "command": ["sh", "-c", "exit 3"],
                    "environment": {"FAKE_SCENARIO": "fail_exit", "FAKE_EXIT_CODE": "3"},
                }
            ),
        )
        slow_id = await accepted(client, request(command("sleep", "600", FAKE_RUN_S="600")))
        ok, failed = await asyncio.gather(
            client.wait_until_done(ok_id, timeout=45), client.wait_until_done(container_id, timeout=45)
        )

        assert [e.phase for e in ok] == [
            "ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED",
        ]  # fmt: skip
        assert any("completed, exit code 0" in t for t in texts(ok[-1])), texts(ok[-1])
        assert ok[-1].outputs["stdout"].startswith("dirac:///tmp/execution-broker/")

        assert failed[-1].phase == "FAILED"
        (job,) = [j for j in fake.jobs.values() if j.comment == f"execution-broker:{container_id}"]
        reason = f"Slurm job {job.job_id} failed: FAILED (NonZeroExitCode), exit code 3"
        assert reason in texts(failed[-1]), texts(failed[-1])
        assert job.script.endswith("exec apptainer run docker://busybox:1 sh -c 'exit 3'\n")
        assert job.cpus == BOOKED_CORES[container_id] and job.memory_mb == 1024

        # Cancel while RUNNING: the Slurm job is DELETEd and the session ends CANCELLED.
        await asyncio.wait_for(reached(client, slow_id, "RUNNING"), 30)
        assert (await client.cancel(slow_id)).applied
        cancelled = await client.wait_until_done(slow_id, timeout=30)
        assert cancelled[-1].phase == "CANCELLED", [(e.phase, texts(e)) for e in cancelled]
        (slow_job,) = [j for j in fake.jobs.values() if j.comment == f"execution-broker:{slow_id}"]
        assert fake.recorded("DELETE", f"/slurm/v0.0.45/job/{slow_job.job_id}")
        assert slow_job.cancelled_at is not None
        assert fake.job_state(slow_job.job_id)[0] == "CANCELLED"

    assert dirac_broker.dead_services() == []
    assert time.monotonic() - began < 60
