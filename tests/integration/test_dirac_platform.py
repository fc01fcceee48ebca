"""The dirac platform against the fake slurmrestd: the platform contract, then one test per fault."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shlex
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.launcher.platforms.dirac.platform import DiracPlatform
from shared.platforms.contract import PlatformContract, PlatformFactory, launch, wait_for_final
from shared.platforms.port import LaunchSpec, Platform, PlatformError, RunState
from shared.platforms.registry import load_platform
from tests.fakes.serve import serve_asgi
from tests.fakes.slurmrestd import FakeSlurm, Token

COMMAND_KIND = "urn:execution-broker:kinds/executable/local-command"
KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable"
DOCKER_KIND = f"{KINDS}/docker-container.yaml"
SINGULARITY_KIND = f"{KINDS}/singularity-container.yaml"
NOTEBOOK_KIND = f"{KINDS}/jupyter-notebook.yaml"
TOKEN = "fake-token"
WORK_ROOT = "/cosma8/data/dp999/broker"
RUN_TIMEOUT = 20.0

Fake = tuple[FakeSlurm, str]


@pytest.fixture
def start_fake() -> Iterator[Callable[..., Fake]]:
    stops: list[Callable[[], None]] = []

    def start(**options: Any) -> Fake:
        fake = FakeSlurm(**options)
        url, stop = serve_asgi(fake)
        stops.append(stop)
        return fake, url

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def fake(start_fake: Callable[..., Fake]) -> Fake:
    return start_fake()


def settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {
        "url": url,
        "user": "alice",
        "token": TOKEN,
        "partition": "cosma8",
        "account": "dp999",
        "work_root": WORK_ROOT,
        "poll_s": 0.05,
        "timeout_s": 2.0,
        "attempts": 4,
        "backoff_s": 0.05,
        "max_backoff_s": 0.2,
    } | overrides


def command_spec(
    tmp_path: Path,
    command: list[str] | None = None,
    *,
    scenario: str | None = None,
    environment: dict[str, str] | None = None,
    cores: int = 2,
    memory_gib: int = 4,
) -> LaunchSpec:
    env = dict(environment or {})
    if scenario:
        env["FAKE_SCENARIO"] = scenario
    executable: dict[str, Any] = {"kind": COMMAND_KIND, "command": command or ["echo", "hello"]}
    if env:
        executable["environment"] = env
    return LaunchSpec(
        session_id=f"session-{tmp_path.name}",
        executable=executable,
        cores=cores,
        memory_gib=memory_gib,
        slot_end=datetime.now(UTC) + timedelta(hours=1),
        work_dir=tmp_path / "work",
    )


def job_id(handle: str) -> int:
    return int(json.loads(handle)["job_id"])


def sha8(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


# -- the contract ---------------------------------------------------------------------------------


class TestDiracPlatformContract(PlatformContract):
    run_timeout = RUN_TIMEOUT

    @pytest.fixture
    def platform_factory(self, fake: Fake) -> PlatformFactory:
        _, url = fake
        return lambda: DiracPlatform(**settings(url))

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        return command_spec(tmp_path, scenario="ok")

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        return command_spec(tmp_path, scenario="fail_exit")

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        return command_spec(tmp_path, ["sleep", "600"], environment={"FAKE_RUN_S": "600"})

    @pytest.fixture(autouse=True)
    def _keep_fake(self, fake: Fake) -> None:
        self.fake = fake[0]

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        # On the "cluster": the job is CANCELLED with nothing completing, and a DELETE was sent.
        assert self.fake.job_state(job_id(handle)) == ["CANCELLED"]
        assert self.fake.recorded("DELETE", f"/slurm/*/job/{job_id(handle)}")


# -- behaviour and faults -------------------------------------------------------------------------


async def test_the_job_script_and_environment_are_exactly_as_expected(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    spec = LaunchSpec(
        session_id="s-1",
        executable={
            "kind": DOCKER_KIND,
            "image": {"locations": ["ghcr.io/org/tool:1.2"]},
            "command": ["run.sh", "--name", "it's $HOME; `x`"],
            "environment": {"GREETING": "hello world", "OMP_NUM_THREADS": "1"},
        },
        cores=8,
        memory_gib=32,
        slot_end=datetime.now(UTC) + timedelta(minutes=90),
        work_dir=tmp_path / "work",
        environment={"EB_TRACE": "abc"},
    )
    platform = DiracPlatform(**settings(url))
    handle = await launch(platform, spec)
    assert json.loads(handle) == {"type": "slurm", "job_id": job_id(handle), "api": "v0.0.45"}
    (submit,) = server.recorded("POST", "/slurm/v0.0.45/job/submit")
    assert submit["headers"]["x-slurm-user-name"] == "alice"
    assert submit["headers"]["x-slurm-user-token"] == "<redacted>"
    assert submit["token_sha256"] == sha8(TOKEN)
    job = submit["body"]["job"]
    expected_script = (
        "#!/bin/bash\n"
        "# execution broker session s-1\n"
        "set -euo pipefail\n"
        f"mkdir -p {WORK_ROOT}/s-1\n"
        f"cd {WORK_ROOT}/s-1\n"
        "exec apptainer run docker://ghcr.io/org/tool:1.2 run.sh --name 'it'\"'\"'s $HOME; `x`'\n"
    )
    assert job["script"] == expected_script
    assert shlex.split(expected_script.splitlines()[-1])[-1] == "it's $HOME; `x`"
    assert job["environment"] == [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "OMP_NUM_THREADS=1",
        "OPENBLAS_NUM_THREADS=8",
        "MKL_NUM_THREADS=8",
        "EB_TRACE=abc",
        "GREETING=hello world",
        "EB_SESSION_ID=s-1",
    ]
    assert {k: job[k] for k in ("name", "comment", "account", "partition", "nodes", "tasks")} == {
        "name": "eb-s-1",
        "comment": "execution-broker:s-1",
        "account": "dp999",
        "partition": "cosma8",
        "nodes": "1",
        "tasks": 1,
    }
    assert job["cpus_per_task"] == 8
    assert job["memory_per_node"] == {"set": True, "infinite": False, "number": 32768}
    assert job["time_limit"]["number"] in (90, 91)  # minutes until slot_end, rounded up
    assert job["current_working_directory"] == WORK_ROOT
    assert job["standard_output"] == f"{WORK_ROOT}/s-1/slurm-%j.out"
    # The job as sent is kept in the work dir.
    assert (spec.work_dir / "job.sh").read_text() == expected_script
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED
    assert status.outputs == {
        "script": str(spec.work_dir / "job.sh"),
        "stdout": f"dirac://{WORK_ROOT}/s-1/slurm-{job_id(handle)}.out",
    }


@pytest.mark.parametrize(
    ("executable", "last_line"),
    [
        (
            {
                "kind": DOCKER_KIND,
                "image": {"locations": ["busybox"], "digest": "sha256:ab"},
                "entrypoint": "/bin/sh",
                "command": ["-c", "echo hi"],
            },
            "exec apptainer exec docker://busybox@sha256:ab /bin/sh -c 'echo hi'",
        ),
        (
            {"kind": DOCKER_KIND, "image": {"locations": ["docker://busybox:1"]}},
            "exec apptainer run docker://busybox:1",
        ),
        ({"kind": SINGULARITY_KIND, "location": "/images/tool.sif"}, "exec apptainer run /images/tool.sif"),
        (
            {"kind": SINGULARITY_KIND, "location": "library://org/tool:1", "command": ["tool", "a b"]},
            "exec apptainer exec library://org/tool:1 tool 'a b'",
        ),
        ({"kind": COMMAND_KIND, "command": ["python3", "-c", "print(1)"]}, "exec python3 -c 'print(1)'"),
    ],
)
async def test_each_executable_kind_becomes_one_command(
    fake: Fake, tmp_path: Path, executable: dict[str, Any], last_line: str
) -> None:
    server, url = fake
    spec = command_spec(tmp_path).model_copy(update={"executable": executable})
    await launch(DiracPlatform(**settings(url)), spec)
    (submit,) = server.recorded("POST", "/slurm/*/job/submit")
    assert submit["body"]["job"]["script"].splitlines()[-1] == last_line


@pytest.mark.parametrize(
    ("executable", "expected"),
    [
        ({"kind": NOTEBOOK_KIND, "location": "/x.ipynb"}, "cannot run executables of kind"),
        ({"kind": DOCKER_KIND, "image": {"locations": []}}, "needs image.locations"),
        ({"kind": COMMAND_KIND, "command": []}, "needs a command"),
        ({"kind": COMMAND_KIND, "command": ["x"], "environment": {"A=B": "1"}}, "invalid variable name"),
    ],
)
async def test_a_bad_executable_is_refused_at_prepare_without_a_request(
    fake: Fake, tmp_path: Path, executable: dict[str, Any], expected: str
) -> None:
    server, url = fake
    spec = command_spec(tmp_path).model_copy(update={"executable": executable})
    with pytest.raises(PlatformError, match=expected) as caught:
        await DiracPlatform(**settings(url)).prepare(spec)
    assert not caught.value.transient
    assert server.recorded() == []


async def test_missing_settings_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "USER", "TOKEN", "TOKEN_FILE", "PARTITION", "ACCOUNT"):
        monkeypatch.delenv(f"EB_DIRAC_{name}", raising=False)
    with pytest.raises(
        PlatformError, match=r"EB_DIRAC_URL, EB_DIRAC_USER.*EB_DIRAC_TOKEN or EB_DIRAC_TOKEN_FILE"
    ):
        await DiracPlatform().prepare(command_spec(tmp_path))


def test_settings_come_from_the_environment_and_keywords_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EB_DIRAC_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("EB_DIRAC_POLL_S", "7")
    monkeypatch.setenv("EB_DIRAC_TOKEN", "secret-env-token")
    platform = load_platform("dirac", poll_s=3.0, some_other_plugin_setting="x")
    assert isinstance(platform, DiracPlatform)
    assert platform.settings.url == "http://127.0.0.1:1"
    assert platform.settings.poll_s == 3.0
    assert "secret-env-token" not in repr(platform) + repr(platform.settings)
    assert platform.preparation_estimate(command_spec(Path("/tmp/x"))) == 120.0


@pytest.mark.parametrize("expired_status", [401, 500, 511])
async def test_a_refused_token_is_read_again_from_its_file(
    start_fake: Callable[..., Fake], tmp_path: Path, expired_status: int
) -> None:
    server, url = start_fake(
        tokens={"tok-a": Token("alice"), "tok-b": Token("alice")}, expired_status=expired_status
    )
    token_file = tmp_path / "token"
    token_file.write_text("SLURM_JWT=tok-a\n")
    spec = command_spec(tmp_path, environment={"FAKE_RUN_S": "600"})
    platform = DiracPlatform(**settings(url, token=None, token_file=token_file))
    handle = await launch(platform, spec)
    # The token expires; a renewer has already written the next one.
    server.tokens["tok-a"].expires_at = server.now() - 1
    token_file.write_text("tok-b\n")
    status = await platform.poll(spec, handle)
    assert status.state in (RunState.PREPARING, RunState.RUNNING)
    polls = server.recorded("GET", f"/slurm/v0.0.45/job/{job_id(handle)}")
    assert [(r["status"], r["token_sha256"]) for r in polls] == [
        (expired_status, sha8("tok-a")),
        (200, sha8("tok-b")),
    ]


async def test_a_token_refused_again_fails_clearly_without_the_token(
    start_fake: Callable[..., Fake], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server, url = start_fake(tokens={"tok-a": Token("alice", expires_at=0.0)})
    token_file = tmp_path / "token"
    token_file.write_text("tok-a")
    with pytest.raises(PlatformError) as caught:
        await DiracPlatform(**settings(url, token=None, token_file=token_file)).prepare(
            command_spec(tmp_path)
        )
    assert not caught.value.transient
    assert "refused the credentials of user 'alice' (HTTP 401" in caught.value.message
    assert "EB_DIRAC_TOKEN_FILE" in caught.value.message
    assert [r["status"] for r in server.recorded()] == [401, 401]  # read again once, then gave up
    assert "tok-a" not in caught.value.message
    assert all("tok-a" not in record.getMessage() for record in caplog.records)


async def test_403_fails_with_a_clear_message_without_the_token(
    fake: Fake, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server, url = fake
    server.add_fault(
        {
            "match": {"method": "POST", "path": "/slurm/*/job/submit"},
            "status": 403,
            "body": {"errors": [{"error": "Access denied", "error_number": 2002}], "warnings": []},
        }
    )
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    await platform.prepare(spec)
    with pytest.raises(PlatformError) as caught:
        await platform.start(spec)
    assert not caught.value.transient
    assert caught.value.message == (
        "slurmrestd denied user 'alice' access to POST /slurm/v0.0.45/job/submit "
        "(HTTP 403: Access denied (error 2002))"
    )
    assert TOKEN not in caught.value.message
    assert all(TOKEN not in record.getMessage() for record in caplog.records)
    assert len(server.recorded("POST")) == 1  # not retried


async def test_500_with_a_transient_error_number_is_retried(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    server.add_fault(
        {
            "match": {"method": "GET", "path": "/slurm/*/job/*"},
            "status": 500,
            "times": 2,
            "body": {
                "errors": [
                    {"error": "Unable to contact slurm controller (connect failure)", "error_number": 1800}
                ],
                "warnings": [],
            },
        }
    )
    status = await platform.poll(spec, handle)
    assert status.state in (RunState.PREPARING, RunState.RUNNING)
    assert [r["status"] for r in server.recorded("GET", "/slurm/*/job/*")] == [500, 500, 200]


@pytest.mark.parametrize(("versions", "status"), [(("v0.0.44",), 500), (("v0.0.45",), 422)])
async def test_a_semantic_error_fails_at_once_whatever_the_status(
    start_fake: Callable[..., Fake], tmp_path: Path, versions: tuple[str, ...], status: int
) -> None:
    server, url = start_fake(versions=versions)
    platform = DiracPlatform(**settings(url, partition="no-such-partition"))
    spec = command_spec(tmp_path)
    await platform.prepare(spec)
    with pytest.raises(PlatformError, match=r"Invalid partition name specified.*\(error 2000\)") as caught:
        await platform.start(spec)
    assert not caught.value.transient
    assert [r["status"] for r in server.recorded("POST")] == [status]


async def test_errors_with_200_are_decided_by_their_error_number(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    await platform.prepare(spec)
    # A transient number (slurmctld RPC rate limit) is retried, even with 200 …
    server.add_fault(
        {
            "match": {"method": "POST", "path": "/slurm/*/job/submit"},
            "status": 200,
            "body": {"errors": [{"error": "backoff", "error_number": 1804}], "warnings": []},
        }
    )
    handle = await platform.start(spec)
    assert [r["status"] for r in server.recorded("POST")] == [200, 200]
    assert job_id(handle) in server.jobs
    # … a permanent one is not, even with 200.
    server.add_fault(
        {
            "match": {"method": "POST", "path": "/slurm/*/job/submit"},
            "status": 200,
            "body": {"errors": [{"error": "Invalid account", "error_number": 2045}], "warnings": []},
        }
    )
    with pytest.raises(PlatformError, match=r"Invalid account \(error 2045\) \(HTTP 200\)") as caught:
        await DiracPlatform(**settings(url)).start(command_spec(tmp_path / "other"))
    assert not caught.value.transient


@pytest.mark.parametrize("status", [503, 429])
async def test_retry_after_is_honoured(fake: Fake, tmp_path: Path, status: int) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    server.add_fault(
        {
            "match": {"method": "GET", "path": "/slurm/*/job/*"},
            "status": status,
            "headers": {"Retry-After": "1"},
        }
    )
    began = time.monotonic()
    await platform.poll(spec, handle)
    assert time.monotonic() - began >= 1.0
    first, second = server.recorded("GET", "/slurm/*/job/*")
    assert (first["status"], second["status"]) == (status, 200)
    assert second["at"] - first["at"] >= 1.0


async def test_a_retry_after_too_long_is_a_transient_failure_at_once(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    server.add_fault(
        {
            "match": {"method": "GET", "path": "/slurm/*/job/*"},
            "status": 503,
            "headers": {"Retry-After": "3600"},
        }
    )
    with pytest.raises(PlatformError, match="asked to retry after 3600 s") as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient


async def test_a_hanging_server_is_a_bounded_transient_failure(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url, timeout_s=0.3, attempts=3))
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    server.add_fault({"match": {"method": "GET", "path": "/slurm/*/job/*"}, "delay_s": 3.0, "times": None})
    began = time.monotonic()
    with pytest.raises(PlatformError, match=r"no answer within 0.3 s \(gave up after 3 attempts\)") as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient
    assert time.monotonic() - began < 2.5
    server.faults.clear()


async def test_a_submit_whose_answer_is_lost_is_found_not_resubmitted(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url, timeout_s=0.3))
    spec = command_spec(tmp_path)
    await platform.prepare(spec)
    # The job is created, then the answer never arrives in time.
    server.add_fault({"match": {"method": "POST", "path": "/slurm/*/job/submit"}, "delay_s": 1.0})
    handle = await platform.start(spec)
    assert list(server.jobs) == [job_id(handle)]
    assert len(server.recorded("POST")) == 1
    assert server.recorded("GET", "/slurm/v0.0.45/jobs/")
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


async def test_a_submit_refused_before_creating_anything_is_retried(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    await platform.prepare(spec)
    server.add_fault({"match": {"method": "POST", "path": "/slurm/*/job/submit"}, "status": 502, "times": 2})
    handle = await platform.start(spec)
    assert [r["status"] for r in server.recorded("POST")] == [502, 502, 200]
    assert list(server.jobs) == [job_id(handle)]


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("fail_exit", "Slurm job {id} failed: FAILED (NonZeroExitCode), exit code 3"),
        (
            "oom",
            "Slurm job {id} ran out of memory: OUT_OF_MEMORY (OutOfMemory), exit code 0,"
            " killed by signal 9 (SIGKILL)",
        ),
        (
            "timeout",
            "Slurm job {id} reached its time limit: TIMEOUT (TimeLimit), exit code 0,"
            " killed by signal 15 (SIGTERM)",
        ),
        ("nodefail", "Slurm job {id} lost its node: NODE_FAIL (NodeDown), exit code 1"),
    ],
)
async def test_a_failed_job_says_why(fake: Fake, tmp_path: Path, scenario: str, expected: str) -> None:
    _, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, scenario=scenario, environment={"FAKE_EXIT_CODE": "3"})
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert (status.state, status.message) == (RunState.FAILED, expected.format(id=job_id(handle)))


async def test_a_stuck_pending_job_stays_preparing_and_can_be_cancelled(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, scenario="stuck_pending")
    handle = await launch(platform, spec)
    for _ in range(10):
        status = await platform.poll(spec, handle)
        assert status.state == RunState.PREPARING
        assert status.message == f"Slurm job {job_id(handle)} is pending (QOSMaxJobsPerUserLimit)"
        await asyncio.sleep(0.1)
    await platform.cancel(spec, handle)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by request")
    assert server.recorded("DELETE", f"/slurm/v0.0.45/job/{job_id(handle)}")


async def test_a_job_cancelled_by_someone_else_is_failed(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, environment={"FAKE_RUN_S": "600"})
    handle = await launch(platform, spec)
    # An administrator's scancel, not the broker's.
    server.jobs[job_id(handle)].cancelled_at = server.now()
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message == f"Slurm job {job_id(handle)} was cancelled on the cluster, not by the broker"


async def test_a_purged_job_is_found_in_slurmdb(start_fake: Callable[..., Fake], tmp_path: Path) -> None:
    server, url = start_fake(min_job_age_s=0.5)
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, scenario="fail_exit")
    handle = await launch(platform, spec)
    from_slurmctld = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    await asyncio.sleep(0.6)
    from_slurmdb = await DiracPlatform(**settings(url)).poll(spec, handle)
    assert from_slurmdb == from_slurmctld
    job_path = f"/slurm/v0.0.45/job/{job_id(handle)}"
    assert server.recorded("GET", job_path)[-1]["status"] == 404
    assert server.recorded("GET", f"/slurmdb/v0.0.45/job/{job_id(handle)}")[-1]["status"] == 200
    # Cancelling and releasing a purged job are harmless.
    await platform.cancel(spec, handle)
    await platform.release(spec, handle)


async def test_vanish_after_done_still_succeeds(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, scenario="vanish_after_done")
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED
    assert server.recorded("GET", f"/slurmdb/*/job/{job_id(handle)}")


async def test_a_malformed_answer_is_a_transient_failure(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    server.add_fault(
        {
            "match": {"method": "GET", "path": "/slurm/*/job/*"},
            "status": 200,
            "body": {"errors": [], "warnings": []},
        }
    )
    with pytest.raises(PlatformError, match="malformed answer from slurmrestd") as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient


async def test_the_newest_common_version_is_used(start_fake: Callable[..., Fake], tmp_path: Path) -> None:
    server, url = start_fake(versions=("v0.0.41", "v0.0.42"))
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    assert json.loads(handle)["api"] == "v0.0.42"
    assert server.recorded("POST", "/slurm/v0.0.42/job/submit")
    assert len(server.recorded("GET", "/openapi/v3")) == 1  # negotiated once, then cached
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


async def test_v0_0_41_submit_answers_are_understood(start_fake: Callable[..., Fake], tmp_path: Path) -> None:
    server, url = start_fake(versions=("v0.0.40", "v0.0.41"))
    handle = await launch(DiracPlatform(**settings(url)), command_spec(tmp_path))
    assert json.loads(handle)["api"] == "v0.0.41"
    assert job_id(handle) in server.jobs


async def test_without_openapi_versions_are_found_by_ping(
    start_fake: Callable[..., Fake], tmp_path: Path
) -> None:
    server, url = start_fake(versions=("v0.0.42", "v0.0.43"), openapi=False)
    handle = await launch(DiracPlatform(**settings(url)), command_spec(tmp_path))
    assert json.loads(handle)["api"] == "v0.0.43"
    pings = [r["path"] for r in server.recorded("GET", "/slurm/*/ping/")]
    assert pings == ["/slurm/v0.0.45/ping/", "/slurm/v0.0.44/ping/", "/slurm/v0.0.43/ping/"]


async def test_a_pinned_version_is_not_negotiated(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    handle = await launch(DiracPlatform(**settings(url, api_version="v0.0.43")), command_spec(tmp_path))
    assert json.loads(handle)["api"] == "v0.0.43"
    assert server.recorded("GET", "/openapi/v3") == []


async def test_no_compatible_version_is_a_clear_error(
    start_fake: Callable[..., Fake], tmp_path: Path
) -> None:
    _, url = start_fake(versions=("v0.0.39", "v0.0.40"))
    with pytest.raises(PlatformError) as caught:
        await DiracPlatform(**settings(url)).prepare(command_spec(tmp_path))
    assert not caught.value.transient
    assert caught.value.message == (
        f"the Slurm REST API at {url} serves v0.0.39, v0.0.40; the dirac platform speaks v0.0.41 to "
        "v0.0.45 (set EB_DIRAC_API_VERSION to pin one)"
    )


async def test_cancel_really_deletes_and_is_idempotent(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    platform: Platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, environment={"FAKE_RUN_S": "600"})
    handle = await launch(platform, spec)
    await platform.cancel(spec, handle)
    await platform.cancel(spec, handle)
    deletes = server.recorded("DELETE", f"/slurm/v0.0.45/job/{job_id(handle)}")
    assert [r["status"] for r in deletes] == [200, 200]
    assert server.jobs[job_id(handle)].cancelled_by == "alice"
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert (status.state, status.message) == (RunState.CANCELLED, "cancelled by request")


async def test_every_http_call_is_a_client_span(fake: Fake, tmp_path: Path) -> None:
    server, url = fake
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    platform = DiracPlatform(**settings(url), tracer_provider=provider)
    spec = command_spec(tmp_path)
    handle = await launch(platform, spec)
    server.add_fault({"match": {"method": "GET", "path": "/slurm/*/job/*"}, "status": 502})
    await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    spans = exporter.get_finished_spans()
    requests = server.recorded()
    assert len(spans) == len(requests) >= 4
    for span, request in zip(spans, requests, strict=True):
        assert span.kind is SpanKind.CLIENT
        attributes = dict(span.attributes or {})
        assert attributes["http.request.method"] == request["method"]
        assert attributes["url.full"] == f"{url}{request['path']}"
        assert attributes["http.response.status_code"] == request["status"]
        assert TOKEN not in json.dumps(attributes)
        # The trace context travels with the request.
        assert request["headers"]["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"
    assert any(dict(s.attributes or {})["http.response.status_code"] == 502 for s in spans)


async def test_the_fake_is_controlled_and_inspected_over_http(fake: Fake, tmp_path: Path) -> None:
    _, url = fake
    platform = DiracPlatform(**settings(url))
    spec = command_spec(tmp_path, environment={"FAKE_RUN_S": "600"})
    handle = await launch(platform, spec)
    async with httpx.AsyncClient(base_url=url) as http:
        fault = {"match": {"method": "DELETE", "path": "/slurm/*/job/*"}, "status": 502, "times": 1}
        assert (await http.post("/_fake/faults", json=fault)).status_code == 200
        await platform.cancel(spec, handle)
        recorded = (await http.get("/_fake/requests")).json()
    deletes = [r for r in recorded if r["method"] == "DELETE"]
    assert [(r["path"], r["status"]) for r in deletes] == [
        (f"/slurm/v0.0.45/job/{job_id(handle)}", 502),
        (f"/slurm/v0.0.45/job/{job_id(handle)}", 200),
    ]
    assert all(r["headers"]["x-slurm-user-token"] == "<redacted>" for r in recorded)
    assert TOKEN not in json.dumps(recorded)
