"""A fake `slurmrestd` (the Slurm REST API) as a small Starlette app, for the `dirac` platform tests.

It follows reference/launcher-targets.md §2.8 and the conventions of §5:

* `/slurm/{ver}/…` and `/slurmdb/{ver}/…` for a configurable set of versions (default v0.0.41 to
  v0.0.45), a JSON 404 for any other; `GET /openapi/v3` lists the served paths for negotiation;
  `GET /slurm/{ver}/ping/` in the shape of that version.
* JWT-style auth: `X-SLURM-USER-TOKEN` (+ optional `X-SLURM-USER-NAME`) or `Authorization: Bearer`,
  never both (401). Tokens are opaque strings mapped to a user and an optional expiry; an expired one
  answers `expired_status` (401, 500 with error 1007, or 511).
* Every response is JSON with `errors[]` and `warnings[]`; numbers are no-val structs
  `{"set", "infinite", "number"}`; `job_state` is an array of strings.
* Jobs change state by the (injectable) clock: PENDING → RUNNING (+CONFIGURING at first) →
  RUNNING+COMPLETING → COMPLETED / FAILED / OUT_OF_MEMORY / TIMEOUT / NODE_FAIL, or CANCELLED
  (+COMPLETING) after a DELETE. A finished job is purged from `/slurm` after `min_job_age_s` (404,
  error 2017) and stays visible in `/slurmdb`.
* The scenario of a job comes from `FAKE_SCENARIO=<name>` in its environment, or from its name
  ending in `.<scenario>`: `ok`, `fail_exit`, `oom`, `timeout`, `nodefail`, `stuck_pending`,
  `vanish_after_done` (purged as soon as it ends), `slow_start`. `FAKE_RUN_S=<seconds>` and
  `FAKE_EXIT_CODE=<n>` tune one job.
* Control endpoints: `/_fake/faults` and `/_fake/requests` as every fake (tests/fakes/base.py: an
  injected fault's default body is `{"errors": [], "warnings": []}`, a string body is text/plain, as
  from a proxy; a record also has `token_sha256`, which token was sent), `POST
  /_fake/clock/advance?s=N`, `GET /_fake/jobs`.
* Finding jobs again: `GET /slurm/{ver}/jobs/` lists the jobs slurmctld still knows (unfiltered, as
  the real one), `GET /slurmdb/{ver}/jobs/?job_name=a,b&users=u&account=x` searches accounting
  (purged jobs too) by name, user and account, as slurmdbd does.

The error numbers are those of slurm/slurm_errno.h as quoted in the reference notes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import FakeServer, bearer_token
from tests.fakes.clock import FakeClock

ALL_VERSIONS = ("v0.0.41", "v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45")
RELEASES = {
    "v0.0.40": "23.11.11",
    "v0.0.41": "24.05.8",
    "v0.0.42": "24.11.7",
    "v0.0.43": "25.05.8",
    "v0.0.44": "25.11.0",
    "v0.0.45": "26.05.3",
}

# slurm_errno.h
SLURM_PROTOCOL_AUTHENTICATION_ERROR = 1007
ESLURM_INVALID_PARTITION_NAME = 2000
ESLURM_JOB_SCRIPT_MISSING = 2009
ESLURM_INVALID_JOB_ID = 2017
ESLURM_ALREADY_DONE = 2021
ESLURM_INVALID_ACCOUNT = 2045
ESLURM_INVALID_TIME_LIMIT = 2051
ESLURM_ENVIRONMENT_MISSING = 2127
ESLURM_REST_FAIL_PARSING = 9001
ESLURM_REST_INVALID_JOBS_DESC = 9002
ESLURM_AUTH_CRED_INVALID = 6001

SCENARIOS = (
    "ok",
    "fail_exit",
    "oom",
    "timeout",
    "nodefail",
    "stuck_pending",
    "vanish_after_done",
    "slow_start",
)


def no_val(number: int | float | None) -> dict[str, Any]:
    if number is None:
        return {"set": False, "infinite": False, "number": 0}
    return {"set": True, "infinite": False, "number": number}


def _read_no_val(value: Any) -> int | None:
    """Input numbers may be plain (int, float, numeric string) or the struct form."""
    if isinstance(value, dict):
        if value.get("infinite"):
            return None
        if not value.get("set", True):
            return None
        value = value.get("number")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def error_item(number: int, text: str, description: str = "", source: str = "") -> dict[str, Any]:
    return {"error": text, "error_number": number, "description": description, "source": source}


@dataclass
class Token:
    user: str
    expires_at: float | None = None  # on the fake's clock


@dataclass
class Job:
    job_id: int
    name: str
    user: str
    account: str
    partition: str
    comment: str
    script: str
    environment: list[str]
    cwd: str
    standard_output: str
    standard_error: str
    cpus: int
    memory_mb: int | None
    time_limit_min: int | None
    submitted: float
    scenario: str
    pending_s: float
    run_s: float
    exit_code: int
    cancelled_at: float | None = None
    cancelled_by: str | None = None


class FakeSlurm(FakeServer):
    def __init__(
        self,
        *,
        versions: tuple[str, ...] = ALL_VERSIONS,
        tokens: dict[str, Token] | None = None,
        partitions: dict[str, int] | None = None,
        accounts: tuple[str, ...] = ("dp999",),
        pending_s: float = 0.2,
        configuring_s: float = 0.1,
        run_s: float = 0.4,
        completing_s: float = 0.1,
        min_job_age_s: float = 300.0,
        expired_status: int = 401,
        openapi: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.versions = tuple(versions)
        self.tokens = dict(tokens or {"fake-token": Token("alice")})
        # partition -> maximum time limit in minutes
        self.partitions = dict(partitions or {"cosma8": 72 * 60, "cosma8-ska": 72 * 60})
        self.accounts = set(accounts)
        self.pending_s = pending_s
        self.configuring_s = configuring_s
        self.run_s = run_s
        self.completing_s = completing_s
        self.min_job_age_s = min_job_age_s
        self.expired_status = expired_status
        self.openapi = openapi
        self.clock = FakeClock(clock)
        self._lock = threading.Lock()
        self.jobs: dict[int, Job] = {}
        self._next_job_id = 1000
        # slurmrestd authenticates before it routes (the OpenAPI document too): one route takes all.
        everything = Route("/{rest:path}", self._api, methods=["GET", "POST", "DELETE", "PUT", "PATCH"])
        super().__init__(
            Starlette(routes=[everything]),
            control=[self.clock.route(), Route("/_fake/jobs", self._jobs_endpoint, methods=["GET"])],
        )

    # -- time ----------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def _epoch(self, t: float | None) -> dict[str, Any]:
        return no_val(None if t is None else int(self.clock.wall(t)))

    # -- control from tests (also reachable over HTTP under /_fake) -----------------------------

    def default_fault_body(self, status: int) -> Any:
        return {"errors": [], "warnings": []}

    def record_extra(self, headers: Mapping[str, str]) -> dict[str, Any]:
        # Which token was sent, without the token: the first 8 hex digits of its SHA-256.
        token = headers.get("x-slurm-user-token") or bearer_token(headers.get("authorization"))
        return {"token_sha256": hashlib.sha256(token.encode()).hexdigest()[:8] if token else None}

    def job_state(self, job_id: int) -> list[str]:
        with self._lock:
            return list(self._state(self.jobs[job_id])["job_state"])

    # -- the app -------------------------------------------------------------------------------

    async def _jobs_endpoint(self, request: Request) -> Response:
        with self._lock:
            jobs = [{**vars(job), **self._state(job)} for job in self.jobs.values()]
        return JSONResponse({"jobs": jobs})

    async def _api(self, request: Request) -> Response:
        raw = await request.body()
        body: Any
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        return self._handle(request.method, request.url.path, request, body, raw)

    # -- the Slurm API -------------------------------------------------------------------------

    def _handle(self, method: str, path: str, request: Request, body: Any, raw: bytes) -> Response:
        # slurmrestd authenticates every request before routing it, the OpenAPI document included.
        user = self._authenticate(request)
        if isinstance(user, Response):
            return user
        if path.rstrip("/") == "/openapi/v3" and method == "GET" and self.openapi:
            return JSONResponse(self._openapi())
        parts = [p for p in path.split("/") if p]
        if len(parts) < 3 or parts[0] not in ("slurm", "slurmdb") or parts[1] not in self.versions:
            return self._reply(None, {}, status=404, errors=[error_item(0, "Unable to find requested URL")])
        api, version, rest = parts[0], parts[1], parts[2:]
        with self._lock:
            if api == "slurm" and rest == ["ping"] and method == "GET":
                return self._reply(version, self._ping(version), user=user)
            if api == "slurm" and rest == ["job", "submit"] and method == "POST":
                return self._submit(version, user, body, raw)
            if api == "slurm" and rest == ["jobs"] and method == "GET":
                jobs = [self._job_info(j) for j in self.jobs.values() if not self._purged(j)]
                return self._reply(version, {"jobs": jobs}, user=user)
            if api == "slurmdb" and rest == ["jobs"] and method == "GET":
                return self._reply(version, {"jobs": self._accounted(request.query_params)}, user=user)
            if api in ("slurm", "slurmdb") and len(rest) == 2 and rest[0] == "job":
                job = self.jobs.get(int(rest[1])) if rest[1].isdigit() else None
                if api == "slurmdb" and method == "GET":
                    if job is None:
                        return self._not_found(version, rest[1])
                    return self._reply(version, {"jobs": [self._slurmdb_job(job)]}, user=user)
                if api == "slurm" and (job is None or self._purged(job)):
                    return self._not_found(version, rest[1])
                assert job is not None
                if api == "slurm" and method == "GET":
                    return self._reply(
                        version,
                        {
                            "jobs": [self._job_info(job)],
                            "last_backfill": no_val(None),
                            "last_update": self._epoch(self.now()),
                        },
                        user=user,
                    )
                if api == "slurm" and method == "DELETE":
                    return self._cancel(version, user, job)
        return self._reply(
            version,
            {},
            status=405 if method != "GET" else 404,
            errors=[error_item(0, "Unable to find requested URL")],
        )

    def _authenticate(self, request: Request) -> str | Response:
        header_token = request.headers.get("x-slurm-user-token")
        bearer = request.headers.get("authorization")
        if header_token and bearer:
            return self._auth_failure(401, "Authentication failure: ambiguous credentials")
        token = header_token if bearer is None else bearer_token(bearer)
        if not token:
            return self._auth_failure(401, "Authentication failure")
        with self._lock:
            known = self.tokens.get(token)
        if known is None:
            return self._auth_failure(401, "Authentication failure")
        if known.expires_at is not None and self.now() >= known.expires_at:
            if self.expired_status == 500:
                return self._auth_failure(
                    500, "Protocol authentication error", SLURM_PROTOCOL_AUTHENTICATION_ERROR
                )
            return self._auth_failure(self.expired_status, "Authentication failure: token expired")
        name = request.headers.get("x-slurm-user-name")
        if name and name != known.user:
            return self._auth_failure(401, "Authentication failure: user name does not match the token")
        return known.user

    def _auth_failure(self, status: int, text: str, number: int = ESLURM_AUTH_CRED_INVALID) -> Response:
        return self._reply(None, {}, status=status, errors=[error_item(number, text, source="auth/jwt")])

    def _not_found(self, version: str, job_id: str) -> Response:
        return self._reply(
            version,
            {"jobs": []},
            status=404,
            errors=[
                error_item(
                    ESLURM_INVALID_JOB_ID,
                    "Invalid job id specified",
                    f"Unable to query JobId={job_id}",
                    "_handle_job_get",
                )
            ],
        )

    def _reply(
        self,
        version: str | None,
        data: dict[str, Any],
        *,
        status: int = 200,
        errors: list[dict[str, Any]] | None = None,
        warnings: list[dict[str, Any]] | None = None,
        user: str = "",
    ) -> Response:
        release = RELEASES.get(version or max(self.versions), "24.11.7")
        major, minor, micro = release.split(".")
        meta = {
            "plugin": {
                "type": "openapi/slurmctld",
                "name": "Slurm OpenAPI slurmctld",
                "data_parser": f"data_parser/{version or max(self.versions)}",
                "accounting_storage": "accounting_storage/slurmdbd",
            },
            "client": {"source": "[127.0.0.1]", "user": user, "group": user},
            "command": [],
            "slurm": {
                "version": {"major": major, "minor": minor, "micro": micro},
                "release": release,
                "cluster": "fake",
            },
        }
        document = {**data, "meta": meta, "errors": errors or [], "warnings": warnings or []}
        return JSONResponse(document, status_code=status)

    def _openapi(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for version in self.versions:
            for template in (
                "/slurm/{v}/ping/",
                "/slurm/{v}/job/submit",
                "/slurm/{v}/job/{{job_id}}",
                "/slurm/{v}/jobs/",
                "/slurmdb/{v}/job/{{job_id}}",
            ):
                paths[template.format(v=version)] = {}
        return {
            "openapi": "3.0.2",
            "info": {"title": "Slurm REST API", "version": f"Slurm-{RELEASES.get(max(self.versions), '')}"},
            "paths": paths,
        }

    def _ping(self, version: str) -> dict[str, Any]:
        if version >= "v0.0.45":
            return {
                "pings": [
                    {"hostname": "fake", "responding": True, "latency": 1000, "primary": True, "status": "UP"}
                ]
            }
        return {
            "pings": [
                {"hostname": "fake", "pinged": "UP", "responding": True, "latency": 1000, "mode": "primary"}
            ]
        }

    def _semantic_error(self, version: str, number: int, text: str, description: str) -> Response:
        # 26.05 (v0.0.45) maps slurmctld's semantic errors to 422; older releases answer 500.
        status = 422 if version >= "v0.0.45" else 500
        return self._reply(
            version, {}, status=status, errors=[error_item(number, text, description, "_job_post_submit")]
        )

    def _submit(self, version: str, user: str, body: Any, raw: bytes) -> Response:
        if not isinstance(body, dict):
            return self._reply(
                version,
                {},
                status=400,
                errors=[
                    error_item(ESLURM_REST_FAIL_PARSING, "Failure parsing", "the body is not a JSON object")
                ],
            )
        job = body.get("job")
        if not isinstance(job, dict):
            return self._reply(
                version,
                {},
                status=400,
                errors=[error_item(ESLURM_REST_INVALID_JOBS_DESC, "Invalid job description", "no job")],
            )
        script = body.get("script", job.get("script"))
        if not isinstance(script, str) or not script.startswith("#!"):
            return self._semantic_error(
                version,
                ESLURM_JOB_SCRIPT_MISSING,
                "Batch script is empty or missing",
                "a script starting with #! is required",
            )
        environment = job.get("environment")
        if (
            not isinstance(environment, list)
            or not environment
            or not all(isinstance(v, str) and "=" in v for v in environment)
        ):
            return self._semantic_error(
                version,
                ESLURM_ENVIRONMENT_MISSING,
                "Environment is missing in job",
                "environment must be a non-empty list of KEY=VALUE",
            )
        partition = job.get("partition")
        if partition not in self.partitions:
            return self._semantic_error(
                version,
                ESLURM_INVALID_PARTITION_NAME,
                "Invalid partition name specified",
                f"partition {partition!r}",
            )
        account = job.get("account")
        if account not in self.accounts:
            return self._semantic_error(
                version,
                ESLURM_INVALID_ACCOUNT,
                "Invalid account or account/partition combination specified",
                f"account {account!r}",
            )
        time_limit = _read_no_val(job.get("time_limit"))
        if time_limit is not None and (time_limit < 1 or time_limit > self.partitions[partition]):
            return self._semantic_error(
                version,
                ESLURM_INVALID_TIME_LIMIT,
                "Requested time limit is invalid (missing or exceeds some limit)",
                f"time_limit {time_limit}",
            )
        env = dict(item.split("=", 1) for item in environment)
        name = str(job.get("name", "sbatch"))
        scenario = env.get("FAKE_SCENARIO") or name.rsplit(".", 1)[-1]
        if scenario not in SCENARIOS:
            scenario = "ok"
        run_s = float(env.get("FAKE_RUN_S", self.run_s))
        pending_s = self.pending_s * (10 if scenario == "slow_start" else 1)
        self._next_job_id += 1
        job_id = self._next_job_id
        cwd = str(job.get("current_working_directory", "/tmp"))
        stdout = str(job.get("standard_output", f"{cwd}/slurm-%j.out"))
        cpus = int(job.get("cpus_per_task", 1) or 1) * int(job.get("tasks", 1) or 1)
        self.jobs[job_id] = Job(
            job_id=job_id,
            name=name,
            user=user,
            account=str(account),
            partition=str(partition),
            comment=str(job.get("comment", "")),
            script=script,
            environment=list(environment),
            cwd=cwd,
            standard_output=stdout,
            standard_error=str(job.get("standard_error", stdout)),
            cpus=cpus,
            memory_mb=_read_no_val(job.get("memory_per_node")),
            time_limit_min=time_limit,
            submitted=self.now(),
            scenario=scenario,
            pending_s=pending_s,
            run_s=run_s,
            exit_code=int(env.get("FAKE_EXIT_CODE", "1")),
        )
        reply: dict[str, Any] = {"job_id": job_id, "step_id": "batch", "job_submit_user_msg": ""}
        if version <= "v0.0.41":
            reply["result"] = {
                "job_id": job_id,
                "step_id": "batch",
                "error_code": 0,
                "error": "",
                "job_submit_user_msg": "",
            }
        return self._reply(version, reply, user=user)

    def _cancel(self, version: str, user: str, job: Job) -> Response:
        state = self._state(job)
        warnings: list[dict[str, Any]] = []
        if state["final"] is not None or job.cancelled_at is not None:
            warnings.append(
                {
                    "description": f"Job was already sent signal: {ESLURM_ALREADY_DONE}",
                    "source": "slurm_kill_job2",
                }
            )
        else:
            job.cancelled_at = self.now()
            job.cancelled_by = user
        status = [
            {
                "job_id": job.job_id,
                "step_id": "batch",
                "error": {"code": 0, "string": "", "message": ""},
                "federation": {"sibling": ""},
            }
        ]
        return self._reply(version, {"status": status}, warnings=warnings, user=user)

    # -- the state machine ---------------------------------------------------------------------

    def _final_state(self, job: Job) -> tuple[str, dict[str, Any], str]:
        """(state, exit_code, reason) of a job that ran to its end."""
        if job.scenario == "fail_exit":
            return "FAILED", _exit("ERROR", job.exit_code), "NonZeroExitCode"
        if job.scenario == "oom":
            return "OUT_OF_MEMORY", _exit("SIGNALED", 0, 9, "SIGKILL"), "OutOfMemory"
        if job.scenario == "timeout":
            return "TIMEOUT", _exit("SIGNALED", 0, 15, "SIGTERM"), "TimeLimit"
        if job.scenario == "nodefail":
            return "NODE_FAIL", _exit("ERROR", 1), "NodeDown"
        return "COMPLETED", _exit("SUCCESS", 0), "None"

    def _state(self, job: Job) -> dict[str, Any]:
        """The job's state now: job_state array, reason, exit code, start/end times, final state or None."""
        now = self.now()
        start = job.submitted + job.pending_s
        if job.cancelled_at is not None:
            started = start <= job.cancelled_at and job.scenario != "stuck_pending"
            ended = job.cancelled_at + self.completing_s
            flags = ["CANCELLED"] if now >= ended else ["CANCELLED", "COMPLETING"]
            return {
                "job_state": flags,
                "reason": "None",
                "exit_code": _exit("SIGNALED", 0, 9, "SIGKILL"),
                "start": start if started else None,
                "end": job.cancelled_at,
                "final": "CANCELLED" if now >= ended else None,
                "ended_at": ended,
            }
        if job.scenario == "stuck_pending":
            return {
                "job_state": ["PENDING"],
                "reason": "QOSMaxJobsPerUserLimit",
                "exit_code": _pending_exit(),
                "start": None,
                "end": None,
                "final": None,
                "ended_at": None,
            }
        if now < start:
            return {
                "job_state": ["PENDING"],
                "reason": "Priority",
                "exit_code": _pending_exit(),
                "start": None,
                "end": None,
                "final": None,
                "ended_at": None,
            }
        run_end = start + job.run_s
        if now < run_end:
            flags = ["RUNNING", "CONFIGURING"] if now < start + self.configuring_s else ["RUNNING"]
            return {
                "job_state": flags,
                "reason": "None",
                "exit_code": _pending_exit(),
                "start": start,
                "end": None,
                "final": None,
                "ended_at": None,
            }
        ended = run_end + self.completing_s
        if now < ended:
            return {
                "job_state": ["RUNNING", "COMPLETING"],
                "reason": "None",
                "exit_code": _pending_exit(),
                "start": start,
                "end": run_end,
                "final": None,
                "ended_at": None,
            }
        final, exit_code, reason = self._final_state(job)
        return {
            "job_state": [final],
            "reason": reason,
            "exit_code": exit_code,
            "start": start,
            "end": run_end,
            "final": final,
            "ended_at": ended,
        }

    def _purged(self, job: Job) -> bool:
        state = self._state(job)
        if state["ended_at"] is None or state["final"] is None:
            return False
        age = 0.0 if job.scenario == "vanish_after_done" else self.min_job_age_s
        return bool(self.now() >= state["ended_at"] + age)

    def _job_info(self, job: Job) -> dict[str, Any]:
        state = self._state(job)
        stdout = job.standard_output.replace("%j", str(job.job_id))
        return {
            "job_id": job.job_id,
            "name": job.name,
            "user_name": job.user,
            "account": job.account,
            "partition": job.partition,
            "comment": job.comment,
            "nodes": "fake-node-1" if state["start"] is not None else "",
            "batch_host": "fake-node-1" if state["start"] is not None else "",
            "job_state": state["job_state"],
            "state_reason": state["reason"],
            "state_description": "",
            "exit_code": state["exit_code"],
            "derived_exit_code": state["exit_code"],
            "submit_time": self._epoch(job.submitted),
            "eligible_time": self._epoch(job.submitted),
            "start_time": self._epoch(state["start"]),
            "end_time": self._epoch(state["end"]),
            "time_limit": no_val(job.time_limit_min),
            "cpus": no_val(job.cpus),
            "memory_per_node": no_val(job.memory_mb),
            "current_working_directory": job.cwd,
            "standard_output": job.standard_output,
            "standard_error": job.standard_error,
            "stdout_expanded": stdout,
            "stderr_expanded": job.standard_error.replace("%j", str(job.job_id)),
        }

    def _accounted(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """slurmdbd's job search: purged jobs too, filtered as its query parameters say
        (comma-separated lists; an absent one filters nothing)."""

        def wanted(key: str) -> set[str] | None:
            value = query.get(key)
            return {v for v in value.split(",") if v} if value else None

        names, users, accounts = wanted("job_name"), wanted("users"), wanted("account")
        return [
            self._slurmdb_job(job)
            for job in self.jobs.values()
            if (names is None or job.name in names)
            and (users is None or job.user in users)
            and (accounts is None or job.account in accounts)
        ]

    def _slurmdb_job(self, job: Job) -> dict[str, Any]:
        state = self._state(job)
        start, end = state["start"], state["end"]
        elapsed = int((end if end is not None else self.now()) - start) if start is not None else 0
        return {
            "job_id": job.job_id,
            "name": job.name,
            "user": job.user,
            "account": job.account,
            "partition": job.partition,
            "comment": {"job": job.comment, "administrator": "", "system": ""},
            "state": {"current": state["job_state"], "reason": state["reason"]},
            "exit_code": state["exit_code"],
            "derived_exit_code": state["exit_code"],
            "kill_request_user": job.cancelled_by or "",
            "time": {
                "submission": int(self.clock.wall(job.submitted)),
                "start": int(self.clock.wall(start)) if start is not None else 0,
                "end": int(self.clock.wall(end)) if end is not None else 0,
                "elapsed": elapsed,
                "limit": no_val(job.time_limit_min),
            },
            "working_directory": job.cwd,
            "stdout": job.standard_output,
            "stderr": job.standard_error,
            "stdout_expanded": job.standard_output.replace("%j", str(job.job_id)),
            "stderr_expanded": job.standard_error.replace("%j", str(job.job_id)),
        }


def _exit(status: str, code: int, signal: int | None = None, name: str = "") -> dict[str, Any]:
    return {"status": [status], "return_code": no_val(code), "signal": {"id": no_val(signal), "name": name}}


def _pending_exit() -> dict[str, Any]:
    return {"status": ["PENDING"], "return_code": no_val(None), "signal": {"id": no_val(None), "name": ""}}
