"""The `jbo` platform: runs the e-MERLIN CASA pipeline (eMCP) at Jodrell Bank through a JBO runner.

JBO publishes no job API, so the runner's HTTP contract is ours (`docs` in `tests/fakes/jbo_runner.py`):
`POST /jbo/v1/jobs`, `GET /jbo/v1/jobs/{id}`, `GET …/log?name=eMCP.log`, `GET …/outputs`,
`GET …/weblog` (a tar), `DELETE /jbo/v1/jobs/{id}`, bearer-token auth.

A session is a `DockerContainer` (the eMCP image, the steps in `command`, the `inputs.ini` fields
in `environment`) plus one data resource naming the observation; `jbo_job` documents the mapping.
eMCP exits 0 even when it fails, so a run only SUCCEEDS when `eMCP.log` says `Pipeline finished`
and the weblog, its info file and (after calibration) `<inbase>_avg.ms` exist.

Settings: `JboSettings` (jbo/settings.py), from keyword arguments or `EB_JBO_*` variables.
"""

from __future__ import annotations

import json
import logging
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from urllib.parse import quote

from opentelemetry.trace import TracerProvider

from services.launcher.platforms.files import read_json_object, write_json_atomically
from services.launcher.platforms.jbo.client import JboHttp
from services.launcher.platforms.jbo.job import build_job, judge
from services.launcher.platforms.jbo.settings import JboSettings
from shared.models import (
    DOCKER_CONTAINER_KIND,
    IVOA_DATA_KIND,
    RUCIO_DATA_KIND,
    S3_DATA_KIND,
    SIMPLE_DATA_KIND,
    SKAO_DATA_KIND,
)
from shared.platforms.port import LaunchSpec, PlatformBase, PlatformError, RunState, RunStatus

log = logging.getLogger(__name__)

JOBS = "/jbo/v1/jobs"

JOB_FILE = "jbo-job.json"
INPUTS_FILE = "inputs.ini"
RESULT_FILE = "jbo-result.json"
LOG_FILE = "eMCP.log"
WEBLOG_FILE = "weblog.tar"

PREPARING_STATES = frozenset({"QUEUED", "STAGING_IN"})
RUNNING_STATES = frozenset({"RUNNING", "STAGING_OUT"})
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
MIN_WALLTIME_S = 60


class JobHandle(NamedTuple):
    job_id: str
    submitted_at: float


def _parse_handle(handle: str) -> JobHandle:
    try:
        data = json.loads(handle)
        if data.get("type") == "jbo" and isinstance(data.get("job_id"), str) and data["job_id"]:
            return JobHandle(data["job_id"], float(data.get("submitted_at") or 0.0))
    except (ValueError, TypeError, AttributeError):
        pass
    raise PlatformError(f"not a jbo platform handle: {handle[:200]!r}")


class JboPlatform(PlatformBase):
    name = "jbo"
    # The e-MERLIN pipeline image (`jbo.job`).
    executable_kinds: ClassVar[frozenset[str]] = frozenset({DOCKER_CONTAINER_KIND})
    # The pipeline's input, named by any of these (`jbo.job.input_from_data`); the runner fetches it.
    data_kinds: ClassVar[frozenset[str]] = frozenset(
        {SIMPLE_DATA_KIND, SKAO_DATA_KIND, IVOA_DATA_KIND, RUCIO_DATA_KIND, S3_DATA_KIND}
    )

    def __init__(self, **settings: Any) -> None:
        # The registry passes every configured setting; unknown ones are ignored on purpose.
        self.settings = JboSettings.from_keywords(settings)
        self._url = self.settings.url
        self._poll_s = self.settings.poll_s
        self._image = self.settings.image
        self._allowed_images = self.settings.image_prefixes
        self._pipeline_version = self.settings.pipeline_version
        self._queue_timeout_s = self.settings.queue_timeout_s
        self._prepare_estimate_s = self.settings.prepare_estimate_s
        self._max_weblog_bytes = self.settings.max_weblog_bytes
        provider = settings.get("tracer_provider")
        self._http = JboHttp(self.settings, provider if isinstance(provider, TracerProvider) else None)

    def __repr__(self) -> str:  # never the token
        return f"JboPlatform(url={self._url!r})"

    def poll_interval(self, spec: LaunchSpec) -> float:
        return self._poll_s

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        return self._prepare_estimate_s

    # -- the port -------------------------------------------------------------------------------

    async def prepare(self, spec: LaunchSpec) -> None:
        if not self._url:
            raise PlatformError("the jbo platform is not configured: set EB_JBO_URL to the JBO runner's URL")
        walltime = (spec.slot_end - datetime.now(UTC)).total_seconds()
        job = build_job(
            session_id=spec.session_id,
            executable=spec.executable,
            data=spec.data,
            cores=spec.cores,
            memory_gib=spec.memory_gib,
            walltime_s=max(MIN_WALLTIME_S, math.floor(walltime)),
            default_image=self._image,
            allowed_images=self._allowed_images,
            pipeline_version=self._pipeline_version,
        )
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        (spec.work_dir / INPUTS_FILE).write_text(job["inputs_ini"])
        write_json_atomically(spec.work_dir / JOB_FILE, job)

    async def start(self, spec: LaunchSpec) -> str:
        job = read_json_object(spec.work_dir / JOB_FILE)
        if job is None:
            raise PlatformError("the eMCP job was not prepared before start")
        for stale in (RESULT_FILE, LOG_FILE, WEBLOG_FILE):
            (spec.work_dir / stale).unlink(missing_ok=True)
        # The session id as idempotency key: a POST retried after a lost answer finds the same job.
        response = await self._http.request(
            "POST", JOBS, json_body=job, headers={"Idempotency-Key": spec.session_id}
        )
        body = _json(response.json())
        job_id = body.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise PlatformError("the JBO runner accepted the job but returned no job_id")
        log.info("jbo: session %s is job %s", spec.session_id, job_id)
        return json.dumps({"type": "jbo", "job_id": job_id, "submitted_at": time.time()})

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        parsed = _parse_handle(handle)
        cached = _cached(spec.work_dir)
        if cached is not None:
            return cached
        path = f"{JOBS}/{quote(parsed.job_id, safe='')}"
        response = await self._http.request("GET", path, ok_statuses=frozenset({404}))
        if response.status_code == 404:
            return _record(
                spec.work_dir,
                RunStatus(
                    state=RunState.FAILED, message=f"the JBO runner no longer knows job {parsed.job_id}"
                ),
            )
        body = _json(response.json())
        state = str(body.get("state", ""))
        outputs = _string_map(body.get("outputs"))
        if state in PREPARING_STATES:
            waited = time.time() - parsed.submitted_at
            if state == "QUEUED" and self._queue_timeout_s and waited > self._queue_timeout_s:
                await self.cancel(spec, handle)
                return _record(
                    spec.work_dir,
                    RunStatus(
                        state=RunState.FAILED,
                        message=(
                            f"the eMCP job {parsed.job_id} was still queued on the JBO runner after "
                            f"{waited:.0f} s (limit {self._queue_timeout_s:g} s); it was cancelled"
                        ),
                    ),
                )
            return RunStatus(state=RunState.PREPARING, message=f"{state} on the JBO runner", outputs=outputs)
        if state in RUNNING_STATES:
            return RunStatus(state=RunState.RUNNING, message=_progress(body), outputs=outputs)
        if state in FINAL_STATES:
            return await self._finish(spec, parsed.job_id, body)
        raise PlatformError(f"the JBO runner reports an unknown state {state[:50]!r} for job {parsed.job_id}")

    async def cancel(self, spec: LaunchSpec, handle: str) -> None:
        parsed = _parse_handle(handle)
        if _cached(spec.work_dir) is not None:
            return  # ended and recorded: nothing runs any more
        await self._http.request(
            "DELETE", f"{JOBS}/{quote(parsed.job_id, safe='')}", ok_statuses=frozenset({404, 409})
        )

    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        """Nothing to free once the job has ended (the runner keeps the outputs); a live job is stopped."""
        if handle is None or _cached(spec.work_dir) is not None:
            return
        try:
            status = await self.poll(spec, handle)
            if not status.state.is_final:
                await self.cancel(spec, handle)
        except PlatformError as error:
            log.warning("jbo: releasing session %s: %s", spec.session_id, error.message)

    # -- helpers --------------------------------------------------------------------------------

    async def _finish(self, spec: LaunchSpec, job_id: str, body: dict[str, Any]) -> RunStatus:
        """Fetch the log, the outputs listing and the weblog; judge; record the verdict."""
        path = f"{JOBS}/{quote(job_id, safe='')}"
        job = read_json_object(spec.work_dir / JOB_FILE) or {"observation_id": "?", "steps": []}
        log_response = await self._http.request(
            "GET", f"{path}/log", params={"name": LOG_FILE}, ok_statuses=frozenset({404})
        )
        log_text = log_response.text if log_response.status_code != 404 else ""
        outputs = _string_map(body.get("outputs"))
        if log_text:
            (spec.work_dir / LOG_FILE).write_text(log_text)
            outputs["log"] = str(spec.work_dir / LOG_FILE)
        listing = await self._http.request("GET", f"{path}/outputs", ok_statuses=frozenset({404}))
        files = _string_list(_json(listing.json()).get("files")) if listing.status_code != 404 else []
        if "weblog" in outputs:
            outputs["weblog_url"] = outputs.pop("weblog")
        if await self._http.download(f"{path}/weblog", spec.work_dir / WEBLOG_FILE, self._max_weblog_bytes):
            outputs["weblog"] = str(spec.work_dir / WEBLOG_FILE)
        exit_code = body.get("exit_code")
        reason = body.get("reason")
        state, message = judge(
            str(body["state"]),
            exit_code if isinstance(exit_code, int) else None,
            reason if isinstance(reason, str) else None,
            log_text,
            files,
            job,
        )
        return _record(spec.work_dir, RunStatus(state=state, message=message, outputs=outputs))


def _progress(body: dict[str, Any]) -> str:
    step = body.get("step")
    done, total = body.get("steps_done"), body.get("steps_total")
    text = f"{body.get('state')} on the JBO runner"
    if isinstance(step, str) and step:
        text += f": step {step}"
        if isinstance(done, int) and isinstance(total, int):
            text += f" ({done}/{total} done)"
    return text


def _json(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PlatformError("the JBO runner answered with something other than a JSON object")
    return value


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


def _string_list(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _cached(work_dir: Path) -> RunStatus | None:
    data = read_json_object(work_dir / RESULT_FILE)
    return RunStatus.model_validate(data) if data is not None else None


def _record(work_dir: Path, status: RunStatus) -> RunStatus:
    write_json_atomically(work_dir / RESULT_FILE, status.model_dump(mode="json"))
    return status
