"""The `jbo` platform against the fake JBO runner: the platform contract, then one test per fault."""

from __future__ import annotations

import asyncio
import json
import logging
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.launcher.platforms.jbo.platform import JboPlatform
from shared.models import DOCKER_CONTAINER_KIND, SIMPLE_DATA_KIND
from shared.models.kinds import IVOA_DATA_KIND, SKAO_DATA_KIND
from shared.platforms.contract import PlatformContract, PlatformFactory, launch, wait_for_final
from shared.platforms.port import LaunchSpec, Platform, PlatformError, RunState
from shared.platforms.registry import load_platform
from tests.fakes.jbo_runner import FakeJboRunner
from tests.fakes.serve import serve_asgi

TOKEN = "s3cr3t-jbo-token-do-not-log"
IMAGE = "ghcr.io/miguelcarcamov/emerlin_casa_pipeline:latest"
OBSERVATION = "TS8004_C_001_20190801"
RUN_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def runner_server() -> Iterator[tuple[FakeJboRunner, str]]:
    runner = FakeJboRunner(TOKEN)
    base_url, stop = serve_asgi(runner)
    runner.base_url = base_url
    try:
        yield runner, base_url
    finally:
        stop()


@pytest.fixture
def runner(runner_server: tuple[FakeJboRunner, str]) -> FakeJboRunner:
    fake, _ = runner_server
    fake.faults.clear()
    return fake


@pytest.fixture
def base_url(runner_server: tuple[FakeJboRunner, str]) -> str:
    return runner_server[1]


def make_platform(base_url: str, **overrides: Any) -> JboPlatform:
    settings: dict[str, Any] = {
        "url": base_url,
        "token": TOKEN,
        "poll_s": 0.05,
        "backoff_s": 0.02,
        "timeout_s": 5.0,
    }
    settings.update(overrides)
    return JboPlatform(**settings)


def emcp_executable(scenario: str = "ok", command: list[str] | None = None, **env: str) -> dict[str, Any]:
    environment = {
        "EMCP_TARGETS": "1252+5634",
        "EMCP_PHSCALS": "1302+5748",
        "FAKE_SCENARIO": scenario,
        **env,
    }
    executable: dict[str, Any] = {
        "kind": DOCKER_CONTAINER_KIND,
        "image": {"locations": [IMAGE]},
        "environment": environment,
    }
    if command is not None:
        executable["command"] = command
    return executable


def ms_data(location: str = f"/archive/emerlin/{OBSERVATION}/{OBSERVATION}_avg.ms") -> dict[str, Any]:
    return {"kind": SIMPLE_DATA_KIND, "meta": {"name": "observation"}, "location": location}


def make_spec(
    tmp_path: Path,
    executable: dict[str, Any],
    data: list[dict[str, Any]] | None = None,
    name: str = "s",
) -> LaunchSpec:
    return LaunchSpec(
        session_id=f"jbo-{tmp_path.name}-{name}",
        executable=executable,
        data=[ms_data()] if data is None else data,
        cores=8,
        memory_gib=64,
        slot_end=datetime.now(UTC) + timedelta(hours=1),
        work_dir=tmp_path / f"work-{name}",
    )


async def fake_requests(base_url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        result = (await client.get(f"{base_url}/_fake/requests")).json()
    assert isinstance(result, list)
    return result


async def add_fault(base_url: str, **fault: Any) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{base_url}/_fake/faults", json=fault)).raise_for_status()


def job_id(handle: str) -> str:
    value = json.loads(handle)["job_id"]
    assert isinstance(value, str)
    return value


# -- the contract ---------------------------------------------------------------------------------


class TestJboPlatformContract(PlatformContract):
    run_timeout = RUN_TIMEOUT

    @pytest.fixture
    def platform_factory(self, base_url: str, runner: FakeJboRunner) -> PlatformFactory:
        return lambda: make_platform(base_url)

    @pytest.fixture
    def good_spec(self, tmp_path: Path) -> LaunchSpec:
        return make_spec(tmp_path, emcp_executable("ok"))

    @pytest.fixture
    def failing_spec(self, tmp_path: Path) -> LaunchSpec:
        return make_spec(tmp_path, emcp_executable("pipeline_error"))

    @pytest.fixture
    def slow_spec(self, tmp_path: Path) -> LaunchSpec:
        return make_spec(tmp_path, emcp_executable("slow"))

    @pytest.fixture(autouse=True)
    def _runner(self, runner: FakeJboRunner) -> None:
        self.fake = runner

    async def assert_run_stopped(self, spec: LaunchSpec, handle: str) -> None:
        job = self.fake.jobs[job_id(handle)]
        assert job.deleted, "the runner never received the DELETE"
        assert self.fake._view(job)["state"] == "CANCELLED"


# -- settings, registry ---------------------------------------------------------------------------


def test_the_registry_finds_jbo_and_env_settings_apply(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EB_JBO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("EB_JBO_POLL_S", "0.2")
    monkeypatch.setenv("EB_JBO_TOKEN", TOKEN)
    platform = load_platform("jbo")
    assert isinstance(platform, JboPlatform)
    spec = make_spec(tmp_path, emcp_executable())
    assert platform.poll_interval(spec) == 0.2
    assert platform.preparation_estimate(spec) == 60.0
    # Keyword settings win over the environment.
    assert JboPlatform(poll_s=3).poll_interval(spec) == 3.0
    assert TOKEN not in repr(platform)


async def test_token_file_is_read(base_url: str, runner: FakeJboRunner, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    platform = make_platform(base_url, token=None, token_file=str(token_file))
    spec = make_spec(tmp_path, emcp_executable())
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message


async def test_unconfigured_platform_says_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EB_JBO_URL", raising=False)
    with pytest.raises(PlatformError, match="EB_JBO_URL"):
        await JboPlatform(token=TOKEN).prepare(make_spec(tmp_path, emcp_executable()))


# -- the job built from the session ---------------------------------------------------------------


async def test_inputs_are_built_from_the_data_resource_exactly(
    base_url: str, runner: FakeJboRunner, tmp_path: Path
) -> None:
    platform = make_platform(base_url)
    executable = emcp_executable(
        "ok",
        command=["eMERLIN_CASA_pipeline.py", "-r", "calibration", "-s", "plot_corrected"],
        EMCP_REFANT="Mk2",
        EMCP_PARAMS=json.dumps({"bandpass": {"bpcal_solint": "inf"}}),
        EMCP_FLAGS_MANUAL_AVG="mode='manual' antenna='Cm'",
    )
    data = [
        {
            "kind": SKAO_DATA_KIND,
            "meta": {"name": "ts8004"},
            "skao": {"namespace": "emerlin", "objectname": f"{OBSERVATION}.ms", "objecttype": "CONTAINER"},
            "ivoa": {"obscore": {"obs_id": OBSERVATION}},
        }
    ]
    spec = make_spec(tmp_path, executable, data)
    await platform.prepare(spec)
    expected_ini = (
        "[inputs]\n"
        "fits_path = fits\n"
        f"inbase = {OBSERVATION}\n"
        "targets = 1252+5634\n"
        "phscals = 1302+5748\n"
        "fluxcal = 1331+305\n"
        "bpcal = 1407+284\n"
        "ptcal = 0319+415\n"
        "refant = Mk2\n"
    )
    assert (spec.work_dir / "inputs.ini").read_text() == expected_ini
    handle = await platform.start(spec)

    posts = [
        r
        for r in await fake_requests(base_url)
        if r["method"] == "POST" and r["headers"].get("idempotency-key") == spec.session_id
    ]
    assert len(posts) == 1
    body = posts[0]["body"]
    assert body["inputs_ini"] == expected_ini
    assert body["observation_id"] == OBSERVATION
    assert body["mode"] == "calibration"
    assert body["run_steps"] == ["calibration"]
    assert body["steps"][0] == "restore_flags" and body["steps"][-1] == "split_fields"
    assert body["skip_steps"] == ["plot_corrected"]
    assert body["input"] == {"kind": "ms", "uri": f"emerlin:{OBSERVATION}.ms", "data_resource": "ts8004"}
    assert body["fields"] == {
        "targets": ["1252+5634"], "phscals": ["1302+5748"], "fluxcal": "1331+305",
        "bpcal": "1407+284", "ptcal": "0319+415", "refant": "Mk2",
    }  # fmt: skip
    assert body["param_overrides"] == {
        "bandpass": {"bpcal_solint": "inf"},
        "global": {"update_casa-data": False},
    }
    assert body["flags"] == {"manual_avg": "mode='manual' antenna='Cm'"}
    assert body["environment"] == {"FAKE_SCENARIO": "ok"}
    assert body["image"] == IMAGE
    assert body["resources"]["cpus"] == 8 and body["resources"]["mem_gb"] == 64
    assert 3500 <= body["resources"]["walltime_s"] <= 3600
    # The token went in the header only, and the fake's recording redacts it.
    assert posts[0]["headers"]["authorization"] == "Bearer <redacted>"
    await platform.release(spec, handle)


@pytest.mark.parametrize(
    ("data", "uri", "kind"),
    [
        ([ms_data(f"https://a.example/{OBSERVATION}.ms")], f"https://a.example/{OBSERVATION}.ms", "ms"),
        ([{"kind": IVOA_DATA_KIND, "ivoa": {"obscore": {"obs_id": OBSERVATION, "access_url": "https://a.example/x"}}}],
         "https://a.example/x", "ms"),
    ],
)  # fmt: skip
async def test_other_data_resources_map_to_the_input(
    base_url: str, tmp_path: Path, data: list[dict[str, Any]], uri: str, kind: str
) -> None:
    spec = make_spec(tmp_path, emcp_executable(), data)
    await make_platform(base_url).prepare(spec)
    job = json.loads((spec.work_dir / "jbo-job.json").read_text())
    assert job["input"]["uri"] == uri and job["input"]["kind"] == kind
    assert job["observation_id"] == OBSERVATION


async def test_fits_input_runs_the_full_pipeline(base_url: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, emcp_executable(), [ms_data(f"/archive/{OBSERVATION}/{OBSERVATION}.fits")])
    await make_platform(base_url).prepare(spec)
    job = json.loads((spec.work_dir / "jbo-job.json").read_text())
    assert job["mode"] == "full" and job["input"]["kind"] == "fitsidi" and job["steps"][0] == "run_importfits"


@pytest.mark.parametrize(
    ("data", "executable", "message"),
    [
        ([], emcp_executable(), "needs a data resource"),
        ([{"kind": SIMPLE_DATA_KIND, "meta": {"name": "x"}}], emcp_executable(), "no usable data resource"),
        ([ms_data(), ms_data("/b/TS1_C_001_2020.ms")], emcp_executable(), "one observation per session"),
        ([ms_data()], emcp_executable(command=["-r", "all"]), "needs FITS-IDI"),
        ([ms_data()], emcp_executable(command=["-r", "bandpazz"]), "unknown eMCP step"),
        ([ms_data()], emcp_executable(command=["-i", "x.ini"]), "inputs.ini"),
        ([ms_data()], {**emcp_executable(), "image": {"locations": ["docker.io/x/y"]}}, "only runs the e-"),
        ([ms_data()], emcp_executable(EMCP_TARGETS=""), "EMCP_TARGETS"),
    ],
)  # fmt: skip
async def test_unusable_requests_are_refused_clearly(
    base_url: str, tmp_path: Path, data: list[dict[str, Any]], executable: dict[str, Any], message: str
) -> None:
    with pytest.raises(PlatformError, match=message) as caught:
        await make_platform(base_url).prepare(make_spec(tmp_path, executable, data))
    assert not caught.value.transient


# -- outcomes -------------------------------------------------------------------------------------


async def test_success_lists_the_weblog_and_the_log(
    base_url: str, runner: FakeJboRunner, tmp_path: Path
) -> None:
    platform = make_platform(base_url)
    spec = make_spec(tmp_path, emcp_executable("ok"))
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    with tarfile.open(status.outputs["weblog"]) as archive:
        assert "weblog/index.html" in archive.getnames()
    assert status.outputs["weblog_url"].endswith("/weblog")
    assert "Pipeline finished" in await asyncio.to_thread(Path(status.outputs["log"]).read_text)
    assert status.outputs["calibrated_ms"].endswith(f"{OBSERVATION}_avg.ms")


async def test_pipeline_error_with_exit_0_fails_naming_the_step(
    base_url: str, runner: FakeJboRunner, tmp_path: Path
) -> None:
    platform = make_platform(base_url)
    spec = make_spec(tmp_path, emcp_executable("pipeline_error", FAKE_FAIL_AT_STEP="fluxscale"))
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    # The runner itself says SUCCEEDED with exit code 0: only the log tells the truth.
    view = runner._view(runner.jobs[job_id(handle)])
    assert (view["state"], view["exit_code"]) == ("SUCCEEDED", 0)
    assert status.state == RunState.FAILED
    assert status.message is not None
    assert "at step fluxscale" in status.message and "Something went wrong" in status.message
    assert "log" in status.outputs and "weblog" in status.outputs  # the partial weblog is kept


async def test_finished_log_without_weblog_fails(base_url: str, tmp_path: Path) -> None:
    platform = make_platform(base_url)
    spec = make_spec(tmp_path, emcp_executable("no_weblog"))
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message is not None and "weblog/index.html" in status.message


async def test_crash_fails_with_the_exit_code(base_url: str, tmp_path: Path) -> None:
    platform = make_platform(base_url)
    spec = make_spec(tmp_path, emcp_executable("crash", FAKE_FAIL_AT_STEP="bandpass"))
    status = await wait_for_final(platform, spec, await launch(platform, spec), RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message is not None and "exit code 137" in status.message and "bandpass" in status.message


async def test_stuck_pending_stays_preparing_then_times_out_and_is_cancelled(
    base_url: str, runner: FakeJboRunner, tmp_path: Path
) -> None:
    spec = make_spec(tmp_path, emcp_executable("stuck_pending"))
    platform = make_platform(base_url)
    handle = await launch(platform, spec)
    await asyncio.sleep(0.4)
    status = await platform.poll(spec, handle)
    assert status.state == RunState.PREPARING and status.message == "QUEUED on the JBO runner"
    # With a queue limit, the plugin gives up, cancels the job on the runner, and says why.
    limited = make_platform(base_url, queue_timeout_s=0.3)
    status = await limited.poll(spec, handle)
    assert status.state == RunState.FAILED
    assert status.message is not None and "still queued" in status.message
    assert runner.jobs[job_id(handle)].deleted


async def test_cancel_reaches_the_runner(base_url: str, runner: FakeJboRunner, tmp_path: Path) -> None:
    platform = make_platform(base_url)
    spec = make_spec(tmp_path, emcp_executable("slow"))
    handle = await launch(platform, spec)
    await TestJboPlatformContract().wait_until_busy(platform, spec, handle)
    await platform.cancel(spec, handle)
    deletes = [
        r
        for r in await fake_requests(base_url)
        if r["method"] == "DELETE" and r["path"].endswith(job_id(handle))
    ]
    assert len(deletes) == 1
    assert deletes[0]["headers"]["authorization"] == "Bearer <redacted>"
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.CANCELLED and status.message


# -- HTTP faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status_code", [401, 403])
async def test_refused_credentials_fail_clearly_without_the_token(
    base_url: str, runner: FakeJboRunner, tmp_path: Path, status_code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    spec = make_spec(tmp_path, emcp_executable())
    platform = make_platform(base_url)
    await platform.prepare(spec)
    await add_fault(base_url, match={"method": "POST", "path": "/jbo/v1/jobs"}, status=status_code, times=1)
    with pytest.raises(PlatformError) as caught:
        await platform.start(spec)
    assert not caught.value.transient
    assert f"HTTP {status_code}" in caught.value.message and "credentials" in caught.value.message
    assert TOKEN not in caught.value.message
    assert TOKEN not in caplog.text
    # A wrong token is refused by the runner itself the same way.
    wrong = make_platform(base_url, token="wrong-token-value")
    with pytest.raises(PlatformError, match="HTTP 401") as caught:
        await wrong.start(spec)
    assert "wrong-token-value" not in caught.value.message and TOKEN not in caught.value.message


async def test_500_then_success_is_retried(base_url: str, runner: FakeJboRunner, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, emcp_executable())
    platform = make_platform(base_url)
    await platform.prepare(spec)
    await add_fault(
        base_url, match={"method": "POST", "path": "/jbo/v1/jobs"}, status=500, body="boom", times=2
    )
    handle = await platform.start(spec)
    posts = [
        r
        for r in await fake_requests(base_url)
        if r["method"] == "POST" and r["headers"].get("idempotency-key") == spec.session_id
    ]
    assert len(posts) == 3
    # Only one job exists for the session, whatever the retries.
    assert sum(1 for job in runner.jobs.values() if job.spec["name"] == spec.session_id) == 1
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


async def test_503_retry_after_is_honoured(base_url: str, runner: FakeJboRunner, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, emcp_executable())
    platform = make_platform(base_url)
    handle = await launch(platform, spec)
    path = f"/jbo/v1/jobs/{job_id(handle)}"
    await add_fault(
        base_url, match={"method": "GET", "path": path}, status=503, headers={"Retry-After": "1"}, times=1
    )
    started = time.monotonic()
    status = await platform.poll(spec, handle)
    assert time.monotonic() - started >= 1.0
    assert status.state in (RunState.PREPARING, RunState.RUNNING, RunState.SUCCEEDED)
    gets = [r for r in await fake_requests(base_url) if r["method"] == "GET" and r["path"] == path]
    assert len(gets) >= 2 and gets[1]["at"] - gets[0]["at"] >= 1.0


async def test_retry_after_beyond_the_limit_is_transient(base_url: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, emcp_executable())
    platform = make_platform(base_url, max_retry_after_s=5)
    handle = await launch(platform, spec)
    path = f"/jbo/v1/jobs/{job_id(handle)}"
    await add_fault(
        base_url, match={"method": "GET", "path": path}, status=503, headers={"Retry-After": "3600"}, times=1
    )
    with pytest.raises(PlatformError, match="retry after 3600") as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient


async def test_a_hanging_runner_is_a_transient_error(base_url: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, emcp_executable())
    platform = make_platform(base_url, timeout_s=0.3, attempts=2)
    handle = await launch(platform, spec)
    path = f"/jbo/v1/jobs/{job_id(handle)}"
    await add_fault(base_url, match={"method": "GET", "path": path}, delay_s=2.0, times=2)
    started = time.monotonic()
    with pytest.raises(PlatformError, match="timed out") as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient
    assert time.monotonic() - started < 2.0
    # Once the runner answers again, the run is found where it was.
    await asyncio.sleep(2.0)
    assert (await wait_for_final(platform, spec, handle, RUN_TIMEOUT)).state == RunState.SUCCEEDED


async def test_persistent_500_is_transient_after_bounded_attempts(base_url: str, tmp_path: Path) -> None:
    spec = make_spec(tmp_path, emcp_executable())
    platform = make_platform(base_url, attempts=3)
    handle = await launch(platform, spec)
    path = f"/jbo/v1/jobs/{job_id(handle)}"
    await add_fault(base_url, match={"method": "GET", "path": path}, status=502, times=3)
    with pytest.raises(PlatformError, match="after 3 attempt") as caught:
        await platform.poll(spec, handle)
    assert caught.value.transient


async def test_each_http_call_is_a_client_span(base_url: str, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    platform: Platform = make_platform(base_url, tracer_provider=provider)
    spec = make_spec(tmp_path, emcp_executable())
    await add_fault(base_url, match={"method": "POST", "path": "/jbo/v1/jobs"}, status=500, times=1)
    handle = await launch(platform, spec)
    await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    spans = exporter.get_finished_spans()
    assert spans and all(span.kind == SpanKind.CLIENT for span in spans)
    posts = [s for s in spans if s.attributes and s.attributes.get("http.request.method") == "POST"]
    assert [s.attributes and s.attributes.get("http.response.status_code") for s in posts] == [500, 201]
    assert posts[1].attributes and posts[1].attributes.get("http.request.resend_count") == 1
    urls = {str(s.attributes.get("url.full")) for s in spans if s.attributes}
    assert f"{base_url}/jbo/v1/jobs" in urls
    assert any(url.endswith("/weblog") for url in urls)
    for span in spans:
        assert TOKEN not in json.dumps(dict(span.attributes or {}))
