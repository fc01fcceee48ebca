"""A fake JBO runner for the e-MERLIN CASA pipeline (eMCP): the HTTP contract the `jbo` plugin uses.

No public JBO job API exists, so this fake *defines* the contract (launcher-targets §3.9):

* `POST /jbo/v1/jobs` (JSON job, §3.8; header `Idempotency-Key` optional) → `201 {"job_id","state"}`,
  or `200` with the job already created under the same key; `422 {"error"}` for an invalid job.
* `GET /jbo/v1/jobs/{id}` → `{"job_id","state","step","steps_done","steps_total","started_at",
  "finished_at","exit_code","reason","outputs":{name: url}}`; states `QUEUED → STAGING_IN → RUNNING →
  STAGING_OUT → SUCCEEDED | FAILED | CANCELLED`. `exit_code` is 0 whenever the process exited by itself,
  even when eMCP failed (the eMCP quirk), and the runner then says SUCCEEDED: it only sees the exit.
* `GET /jbo/v1/jobs/{id}/log?name=eMCP.log|casa_eMCP.log` → text (`Start <step>` / `End <step>`, then
  `Pipeline finished` or `Something went wrong. Producing weblog before quiting`); 404 before it starts.
* `GET /jbo/v1/jobs/{id}/outputs` → `{"files": [relative paths in the job's working directory]}`.
* `GET /jbo/v1/jobs/{id}/weblog` → a tar of `weblog/`, 404 until the first step has ended.
* `DELETE /jbo/v1/jobs/{id}` → 202 and `CANCELLED` (200 and unchanged once the job has ended).
* Every `/jbo/` call needs `Authorization: Bearer <token>` (else 401).

Control (never recorded): `/_fake/faults` and `/_fake/requests` as every fake (tests/fakes/base.py;
an injected fault's body is sent without a Content-Type, empty unless the fault gives one).

Scenario per job: the job's `environment.FAKE_SCENARIO` (else the runner's default): `ok`,
`pipeline_error` (eMCP logs a failed step, exits 0: the runner says SUCCEEDED), `crash` (killed,
exit 137: FAILED), `no_weblog` (log says finished, no weblog), `stuck_pending` (QUEUED forever),
`slow` (each step takes an hour). `FAKE_FAIL_AT_STEP` picks the failing step (default: the middle one).
"""

from __future__ import annotations

import io
import itertools
import re
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeServer, bearer_token

# The fake's own copy of the eMCP step lists (§3.2): the plugin's must agree with it.
PRE_PROCESSING = [
    "run_importfits",
    "flag_aoflagger",
    "flag_apriori",
    "flag_manual",
    "average",
    "plot_data",
    "save_flags",
]
CALIBRATION = [
    "restore_flags", "flag_manual_avg", "init_models", "bandpass", "initial_gaincal", "fluxscale",
    "bandpass_final", "gaincal_final", "applycal_all", "flag_target", "plot_corrected", "first_images",
    "split_fields",
]  # fmt: skip
SCENARIOS = ("ok", "pipeline_error", "crash", "no_weblog", "stuck_pending", "slow")
_OBS_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


@dataclass
class Job:
    job_id: str
    spec: dict[str, Any]
    scenario: str
    created: float
    steps: list[str]
    fail_index: int
    cancelled_at: float | None = None
    deleted: list[float] = field(default_factory=list)


class FakeJboRunner(FakeServer):
    fault_media_type = None

    def __init__(
        self,
        token: str = "fake-jbo-token",
        *,
        queue_s: float = 0.1,
        staging_s: float = 0.1,
        step_s: float = 0.05,
        stage_out_s: float = 0.1,
        default_scenario: str = "ok",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.queue_s, self.staging_s, self.step_s, self.stage_out_s = queue_s, staging_s, step_s, stage_out_s
        self.default_scenario = default_scenario
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.by_key: dict[str, str] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.base_url = ""  # set by the test once served; used in the outputs' URLs
        api = Starlette(
            routes=[
                Route("/jbo/v1/jobs", self.submit, methods=["POST"]),
                Route("/jbo/v1/jobs/{job_id}", self.status, methods=["GET"]),
                Route("/jbo/v1/jobs/{job_id}", self.cancel, methods=["DELETE"]),
                Route("/jbo/v1/jobs/{job_id}/log", self.log, methods=["GET"]),
                Route("/jbo/v1/jobs/{job_id}/outputs", self.outputs, methods=["GET"]),
                Route("/jbo/v1/jobs/{job_id}/weblog", self.weblog, methods=["GET"]),
            ]
        )
        super().__init__(api)

    # -- the runner -----------------------------------------------------------------------------

    def _authorised(self, request: Request) -> Response | None:
        if bearer_token(request.headers.get("authorization")) != self.token:
            return JSONResponse(
                {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="jbo"'}
            )
        return None

    def _job(self, request: Request) -> Job | Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return job

    async def submit(self, request: Request) -> Response:
        denied = self._authorised(request)
        if denied is not None:
            return denied
        try:
            spec = await request.json()
        except ValueError:
            return JSONResponse({"error": "the body is not JSON"}, status_code=422)
        problem = _invalid(spec)
        if problem:
            return JSONResponse({"error": problem}, status_code=422)
        key = request.headers.get("idempotency-key")
        with self._lock:
            if key and key in self.by_key:
                job = self.jobs[self.by_key[key]]
                return JSONResponse(
                    {"job_id": job.job_id, "state": self._view(job)["state"]}, status_code=200
                )
            environment = spec.get("environment") or {}
            scenario = environment.get("FAKE_SCENARIO", self.default_scenario)
            if scenario not in SCENARIOS:
                return JSONResponse({"error": f"unknown FAKE_SCENARIO {scenario}"}, status_code=422)
            steps = [step for step in spec["steps"] if step not in spec.get("skip_steps", [])]
            fail_at = environment.get("FAKE_FAIL_AT_STEP")
            fail_index = steps.index(fail_at) if fail_at in steps else len(steps) // 2
            job = Job(f"jbo-{next(self._ids):05d}", spec, scenario, self.clock(), steps, fail_index)
            self.jobs[job.job_id] = job
            if key:
                self.by_key[key] = job.job_id
        return JSONResponse({"job_id": job.job_id, "state": "QUEUED"}, status_code=201)

    async def status(self, request: Request) -> Response:
        job = self._job(request)
        return job if isinstance(job, Response) else JSONResponse(self._view(job))

    async def cancel(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        with self._lock:
            job.deleted.append(self.clock())
            if self._view(job)["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                return JSONResponse(self._view(job), status_code=200)
            job.cancelled_at = self.clock()
        return JSONResponse(self._view(job), status_code=202)

    async def log(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        name = request.query_params.get("name", "eMCP.log")
        if name not in ("eMCP.log", "casa_eMCP.log"):
            return JSONResponse({"error": f"no log named {name}"}, status_code=404)
        lines = self._log_lines(job)
        if lines is None:
            return JSONResponse({"error": "the job has not started"}, status_code=404)
        if name == "casa_eMCP.log":
            lines = [f"INFO casa\t{line}" for line in lines]
        return PlainTextResponse("".join(line + "\n" for line in lines))

    async def outputs(self, request: Request) -> Response:
        job = self._job(request)
        return job if isinstance(job, Response) else JSONResponse({"files": self._files(job)})

    async def weblog(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, Response):
            return job
        files = [path for path in self._files(job) if path.startswith("weblog/")]
        if not files:
            return JSONResponse({"error": "no weblog yet"}, status_code=404)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for path in files:
                title = f"eMCP weblog of {job.spec['observation_id']}: {path}"
                content = f"<html><body>{title}</body></html>\n".encode()
                info = tarfile.TarInfo(path)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
        return Response(buffer.getvalue(), media_type="application/x-tar")

    # -- the simulated time line ----------------------------------------------------------------

    def _phase(self, job: Job, at: float | None = None) -> tuple[str, int, float]:
        """(state, index of the current step or steps done, seconds since the run's steps began)."""
        now = self.clock() if at is None else at
        if job.cancelled_at is not None and now >= job.cancelled_at:
            state, index, running = self._timeline(job, job.cancelled_at)
            return (
                ("CANCELLED", index, running)
                if state not in ("SUCCEEDED", "FAILED")
                else (state, index, running)
            )
        return self._timeline(job, now)

    def _timeline(self, job: Job, now: float) -> tuple[str, int, float]:
        elapsed = now - job.created
        if job.scenario == "stuck_pending" or elapsed < self.queue_s:
            return "QUEUED", 0, -1.0
        if elapsed < self.queue_s + self.staging_s:
            return "STAGING_IN", 0, -1.0
        step_s = 3600.0 if job.scenario == "slow" else self.step_s
        running = elapsed - self.queue_s - self.staging_s
        index = int(running // step_s)
        last = job.fail_index if job.scenario in ("pipeline_error", "crash") else len(job.steps)
        if index < last:
            return "RUNNING", index, running
        if job.scenario == "crash":
            return "FAILED", last, running
        after = running - last * step_s
        if after < self.stage_out_s:
            return "STAGING_OUT", last, running
        return "SUCCEEDED", last, running

    def _log_lines(self, job: Job) -> list[str] | None:
        state, index, running = self._phase(job)
        if state in ("QUEUED", "STAGING_IN") or running < 0:
            return None  # the pipeline never started (still queued, or cancelled before it ran)
        lines = [f"eMCP {job.spec.get('pipeline_version', '?')} for {job.spec['observation_id']}"]
        for step in job.steps[:index]:
            lines += [f"Start {step}", f"End {step}"]
        # The step in progress (running, cancelled, or the one eMCP failed or crashed in).
        in_step = job.scenario in ("pipeline_error", "crash") or state in ("RUNNING", "CANCELLED")
        if index < len(job.steps) and in_step:
            lines.append(f"Start {job.steps[index]}")
        if job.scenario == "pipeline_error" and state in ("STAGING_OUT", "SUCCEEDED"):
            lines += [
                f"SEVERE  {job.steps[index]}: Table {job.spec['observation_id']}_avg.ms does not exist",
                "Something went wrong. Producing weblog before quiting",
                "Now quiting",
            ]
        if job.scenario in ("ok", "no_weblog") and state in ("STAGING_OUT", "SUCCEEDED"):
            lines.append("Pipeline finished")
        return lines

    def _files(self, job: Job) -> list[str]:
        state, index, _ = self._phase(job)
        if index == 0 or job.scenario == "no_weblog":
            files = []
        else:
            files = ["weblog/index.html", "weblog/info/eMCP_info.txt", "weblog/info/eMCP.log.txt"]
        if self._log_lines(job) is not None:
            files += ["eMCP.log", "casa_eMCP.log"]
        if job.scenario in ("ok", "no_weblog") and state in ("STAGING_OUT", "SUCCEEDED"):
            if set(job.steps) & set(CALIBRATION):
                files.append(f"{job.spec['observation_id']}_avg.ms")
            if "split_fields" in job.steps:
                files.append("splits/")
        return sorted(files)

    def _view(self, job: Job) -> dict[str, Any]:
        state, index, running = self._phase(job)
        final = state in ("SUCCEEDED", "FAILED", "CANCELLED")
        base = f"{self.base_url}/jbo/v1/jobs/{job.job_id}"
        outputs: dict[str, str] = {}
        files = self._files(job)
        if "weblog/index.html" in files:
            outputs["weblog"] = f"{base}/weblog"
        if "eMCP.log" in files:
            outputs["eMCP.log"] = f"{base}/log?name=eMCP.log"
        avg = f"{job.spec['observation_id']}_avg.ms"
        if avg in files:
            outputs["calibrated_ms"] = f"{base}/files/{avg}"
        exit_code: int | None = None
        reason: str | None = None
        if state == "SUCCEEDED":
            exit_code = 0  # eMCP's sys.exit() after a failure is still 0
        elif state == "FAILED":
            exit_code, reason = 137, "exit"
        elif state == "CANCELLED":
            reason = "cancelled"
        return {
            "job_id": job.job_id,
            "state": state,
            "step": job.steps[index] if state == "RUNNING" and index < len(job.steps) else None,
            "steps_done": min(index, len(job.steps)),
            "steps_total": len(job.steps),
            "started_at": None if running < 0 and state in ("QUEUED", "STAGING_IN") else job.created,
            "finished_at": self.clock() if final else None,
            "exit_code": exit_code,
            "reason": reason,
            "outputs": outputs,
        }


def _invalid(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return "the job must be a JSON object"
    if spec.get("kind") != "emerlin-emcp":
        return "kind must be emerlin-emcp"
    observation = spec.get("observation_id")
    if not isinstance(observation, str) or not _OBS_ID.match(observation):
        return "observation_id is missing or invalid"
    if spec.get("mode") not in ("calibration", "full", "custom"):
        return "mode must be calibration, full or custom"
    steps = spec.get("steps")
    if not isinstance(steps, list) or not steps or any(s not in PRE_PROCESSING + CALIBRATION for s in steps):
        return "steps must be a non-empty list of eMCP steps"
    ini = spec.get("inputs_ini")
    if not isinstance(ini, str) or "[inputs]" not in ini or f"inbase = {observation}" not in ini:
        return "inputs_ini must be an [inputs] section with inbase = observation_id"
    source = spec.get("input")
    if not isinstance(source, dict) or source.get("kind") not in ("ms", "fitsidi") or not source.get("uri"):
        return "input must be {kind: ms|fitsidi, uri}"
    resources = spec.get("resources")
    if not isinstance(resources, dict):
        return "resources are missing"
    walltime = resources.get("walltime_s")
    if not isinstance(walltime, int) or walltime <= 0 or walltime > 48 * 3600:
        return "resources.walltime_s must be between 1 s and 48 h"
    if not isinstance(resources.get("cpus"), int) or resources["cpus"] < 1:
        return "resources.cpus must be at least 1"
    return None
