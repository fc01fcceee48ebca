"""The `dirac` platform: runs a session as a Slurm batch job through the Slurm REST API (slurmrestd).

* Settings come from keyword arguments, else from `EB_DIRAC_*` variables (`dirac/settings.py`).
* The API version is negotiated once per instance: the newest of v0.0.41…v0.0.45 that the server
  also serves (read from `GET /openapi/v3`, else by pinging each version), unless pinned.
* prepare checks the executable, builds the batch job (see `dirac_job`), writes it to the work dir
  (`job.sh`, `job.json`) and checks that slurmrestd answers to our credentials.
* start submits the job; the handle holds the job id and the API version. A submit whose answer was
  lost is looked for by its comment before submitting again, so a session never runs twice. The
  job's name, `eb-<session>`, is the `start_name` the launcher records before it starts: after a
  launcher restart between the submit and the saving of the handle, `adopt` finds the job by that
  name (slurmctld's job list, else accounting's, filtered by `job_name` and `users`) instead of
  submitting it again.
* poll reads `GET /slurm/{v}/job/{id}`, and `/slurmdb/{v}/job/{id}` once slurmctld has purged it.
* cancel records that the broker asked (a `cancel-requested` file in the work dir, so that a
  CANCELLED job is told apart from one cancelled by someone else), then DELETEs the job; idempotent.
* release has nothing to free: the job's files on the cluster are its outputs.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from opentelemetry import trace

from services.launcher.platforms.dirac import job as dirac_job
from services.launcher.platforms.dirac.client import (
    ESLURM_ALREADY_DONE,
    ESLURM_INVALID_JOB_ID,
    SlurmClient,
    SlurmReply,
)
from services.launcher.platforms.dirac.settings import DiracSettings
from shared.http.retry import CallState
from shared.models import DOCKER_CONTAINER_KIND, LOCAL_COMMAND_KIND, SINGULARITY_CONTAINER_KIND
from shared.platforms.port import LaunchSpec, PlatformBase, PlatformError, RunStatus

log = logging.getLogger(__name__)

# Newest first. v0.0.40 and older are left out: their job_state was still a string in places, and
# every Slurm release since 24.05 serves v0.0.41 or newer.
SUPPORTED_VERSIONS = ("v0.0.45", "v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41")
SCRIPT_FILE = "job.sh"
SUBMIT_FILE = "job.json"
CANCEL_MARKER = "cancel-requested"


class DiracPlatform(PlatformBase):
    name = "dirac"
    # The commands of a Slurm batch job (`dirac_job.command_argv`).
    executable_kinds: ClassVar[frozenset[str]] = frozenset(
        {DOCKER_CONTAINER_KIND, SINGULARITY_CONTAINER_KIND, LOCAL_COMMAND_KIND}
    )
    # The batch job is given no data: nothing is staged for it, so no data kind is offered.
    data_kinds: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **settings: Any) -> None:
        # The registry passes every configured setting; those of other plugins are ignored.
        provider = settings.pop("tracer_provider", None)
        self.settings = DiracSettings.from_keywords(settings)
        self._slurm = SlurmClient(
            self.settings, tracer_provider=provider if isinstance(provider, trace.TracerProvider) else None
        )
        self._version: str | None = self.settings.api_version or None

    def __repr__(self) -> str:  # never the token
        return f"DiracPlatform(url={self.settings.url!r}, user={self.settings.user!r})"

    # -- the port ------------------------------------------------------------------------------

    def poll_interval(self, spec: LaunchSpec) -> float:
        return self.settings.poll_s

    def preparation_estimate(self, spec: LaunchSpec) -> float:
        return self.settings.preparation_estimate_s

    async def prepare(self, spec: LaunchSpec) -> None:
        self._check_configured()
        body = self._submit_body(spec)  # refuses a bad executable before anything is sent
        await asyncio.to_thread(_write_job_files, spec.work_dir, body)
        await self._negotiate(self._slurm)

    async def start(self, spec: LaunchSpec) -> str:
        self._check_configured()
        body = self._submit_body(spec)
        await asyncio.to_thread(_write_job_files, spec.work_dir, body)
        (spec.work_dir / CANCEL_MARKER).unlink(missing_ok=True)
        version = await self._negotiate(self._slurm)
        job_id = await self._submit(self._slurm, version, spec, body)
        log.info("dirac: session %s submitted as Slurm job %s (%s)", spec.session_id, job_id, version)
        return json.dumps({"type": "slurm", "job_id": job_id, "api": version})

    def start_name(self, spec: LaunchSpec) -> str:
        # A batch submit repeated after a crash would run the session twice: name the job up front.
        return dirac_job.job_name(spec.session_id)

    async def adopt(self, spec: LaunchSpec, name: str) -> str | None:
        """The job an interrupted start submitted under `name`: among slurmctld's jobs, else (ended
        and purged while the launcher was down) in accounting, filtered by name and user there."""
        self._check_configured()
        version = await self._negotiate(self._slurm)
        comment = dirac_job.job_comment(spec.session_id)
        live = await self._slurm.call("GET", f"/slurm/{version}/jobs/")
        job_id = self._job_with(live, comment, name)
        if job_id is None:
            accounted = await self._slurm.call(
                "GET", f"/slurmdb/{version}/jobs/", params={"job_name": name, "users": self.settings.user}
            )
            job_id = self._job_with(accounted, comment, name)
        if job_id is None:
            return None
        log.info("dirac: session %s adopts Slurm job %s (%s), submitted before a restart",
                 spec.session_id, job_id, name)  # fmt: skip
        return json.dumps({"type": "slurm", "job_id": job_id, "api": version})

    async def poll(self, spec: LaunchSpec, handle: str) -> RunStatus:
        job_id, version = _parse_handle(handle)
        client = self._slurm
        reply = await client.call("GET", f"/slurm/{version}/job/{job_id}", accept={ESLURM_INVALID_JOB_ID})
        view = None
        if not _not_found(reply):
            self._raise_for(reply, f"reading Slurm job {job_id}")
            view = _parsed(dirac_job.view_from_slurm, reply, job_id)
        if view is None:
            # Purged from slurmctld (MinJobAge): the accounting database still knows it.
            db = await client.call("GET", f"/slurmdb/{version}/job/{job_id}", accept={ESLURM_INVALID_JOB_ID})
            if _not_found(db):
                raise PlatformError(f"Slurm job {job_id} is known neither to slurmctld nor to slurmdbd")
            self._raise_for(db, f"reading the accounting record of Slurm job {job_id}")
            view = _parsed(dirac_job.view_from_slurmdb, db, job_id)
            if view is None:
                raise PlatformError(f"Slurm job {job_id} is known neither to slurmctld nor to slurmdbd")
        cancel_requested = await asyncio.to_thread((spec.work_dir / CANCEL_MARKER).exists)
        return dirac_job.run_status(
            view, cancel_requested=cancel_requested, outputs=self._outputs(spec, view)
        )

    async def cancel(self, spec: LaunchSpec, handle: str) -> None:
        job_id, version = _parse_handle(handle)
        await asyncio.to_thread(_touch, spec.work_dir / CANCEL_MARKER)
        reply = await self._slurm.call(
            "DELETE", f"/slurm/{version}/job/{job_id}", accept={ESLURM_INVALID_JOB_ID, ESLURM_ALREADY_DONE}
        )
        if _not_found(reply) or ESLURM_ALREADY_DONE in reply.error_numbers:
            return  # already ended (and perhaps purged): nothing left to stop
        self._raise_for(reply, f"cancelling Slurm job {job_id}")

    async def release(self, spec: LaunchSpec, handle: str | None) -> None:
        # Nothing is held on the cluster besides the job's files, which are its outputs.
        return None

    # -- helpers -------------------------------------------------------------------------------

    def _check_configured(self) -> None:
        missing = [
            f"EB_DIRAC_{name.upper()}"
            for name in ("url", "user", "partition", "account")
            if not getattr(self.settings, name)
        ]
        if self.settings.token is None:
            missing.append("EB_DIRAC_TOKEN or EB_DIRAC_TOKEN_FILE")
        if missing:
            raise PlatformError(f"the dirac platform is not configured: set {', '.join(missing)}")

    def _submit_body(self, spec: LaunchSpec) -> dict[str, Any]:
        return dirac_job.submit_body(
            spec,
            partition=self.settings.partition,
            account=self.settings.account,
            work_root=self.settings.work_root,
            apptainer=self.settings.apptainer,
            now=datetime.now(UTC),
        )

    async def _negotiate(self, client: SlurmClient) -> str:
        if self._version is not None:
            return self._version
        served: set[str] = set()
        reply = await client.call("GET", "/openapi/v3")
        paths = reply.body.get("paths") if reply.status == 200 else None
        if isinstance(paths, dict):
            served = {v for p in paths for v in _versions_in(p)}
        else:
            # No OpenAPI document: ask each version we speak, newest first.
            for version in SUPPORTED_VERSIONS:
                ping = await client.call("GET", f"/slurm/{version}/ping/")
                if ping.status == 200 and not ping.error_numbers:
                    served.add(version)
                    break
        for version in SUPPORTED_VERSIONS:
            if version in served:
                self._version = version
                log.info("dirac: using Slurm REST API %s at %s", version, self.settings.url)
                return version
        offered = ", ".join(sorted(served)) or "none that answered"
        raise PlatformError(
            f"the Slurm REST API at {self.settings.url} serves {offered}; the dirac platform speaks "
            f"{SUPPORTED_VERSIONS[-1]} to {SUPPORTED_VERSIONS[0]} (set EB_DIRAC_API_VERSION to pin one)"
        )

    async def _submit(self, client: SlurmClient, version: str, spec: LaunchSpec, body: dict[str, Any]) -> int:
        comment = dirac_job.job_comment(spec.session_id)

        async def find(state: CallState) -> int | None:
            return self._job_with(await client.look(f"/slurm/{version}/jobs/", state), comment)

        def parse(reply: SlurmReply) -> int:
            self._raise_for(reply, "submitting the Slurm job")
            job_id = reply.body.get("job_id")
            if not isinstance(job_id, int):  # v0.0.41 also nests it in "result"
                result = reply.body.get("result")
                job_id = result.get("job_id") if isinstance(result, dict) else None
            if not isinstance(job_id, int) or isinstance(job_id, bool):
                raise PlatformError("slurmrestd accepted the job but returned no job_id", transient=True)
            return job_id

        return await client.create(f"/slurm/{version}/job/submit", body, find, parse)

    def _job_with(self, reply: SlurmReply, comment: str, name: str | None = None) -> int | None:
        """The id of the job that carries our comment (and `name`, when given) in a job listing of
        slurmctld or of accounting (whose comment is `{"job": …}` and user `user`), or None."""
        self._raise_for(reply, "listing Slurm jobs")
        jobs = reply.body.get("jobs")
        for record in jobs if isinstance(jobs, list) else []:
            if not isinstance(record, dict):
                continue
            noted = record.get("comment")
            noted = noted.get("job") if isinstance(noted, dict) else noted
            user = record.get("user_name", record.get("user"))
            if (
                noted == comment
                and (name is None or record.get("name") == name)
                and user in (None, self.settings.user)
                and isinstance(record.get("job_id"), int)
                and not isinstance(record.get("job_id"), bool)
            ):
                log.info("dirac: found Slurm job %s of session's earlier submit", record["job_id"])
                return int(record["job_id"])
        return None

    def _raise_for(self, reply: SlurmReply, doing: str) -> None:
        """Errors reported by slurmrestd, at any HTTP status, are final here (retries are done)."""
        if reply.failed:
            raise PlatformError(f"slurmrestd failed {doing}: {reply.describe()} (HTTP {reply.status})")

    def _outputs(self, spec: LaunchSpec, view: dirac_job.JobView) -> dict[str, str]:
        outputs = {"script": str(spec.work_dir / SCRIPT_FILE)}
        if view.stdout:
            # A path on the cluster, not on this machine.
            outputs["stdout"] = f"dirac://{view.stdout}" if view.stdout.startswith("/") else view.stdout
        return outputs


def _write_job_files(work_dir: Path, body: dict[str, Any]) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / SCRIPT_FILE).write_text(body["job"]["script"])
    (work_dir / SUBMIT_FILE).write_text(json.dumps(body, indent=2))


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def _versions_in(path: str) -> list[str]:
    parts = path.split("/")
    return (
        [parts[2]] if len(parts) > 2 and parts[1] in ("slurm", "slurmdb") and parts[2].startswith("v") else []
    )


def _not_found(reply: SlurmReply) -> bool:
    return ESLURM_INVALID_JOB_ID in reply.error_numbers or (reply.status == 404 and not reply.error_numbers)


def _parsed(parse: Any, reply: SlurmReply, job_id: int) -> dirac_job.JobView | None:
    try:
        view: dirac_job.JobView | None = parse(reply.body, job_id)
    except ValueError as error:
        raise PlatformError(
            f"malformed answer from slurmrestd about job {job_id}: {error}", transient=True
        ) from None
    return view


def _parse_handle(handle: str) -> tuple[int, str]:
    try:
        data = json.loads(handle)
        if data["type"] == "slurm" and isinstance(data["job_id"], int) and str(data["api"]).startswith("v"):
            return int(data["job_id"]), str(data["api"])
    except (ValueError, KeyError, TypeError):
        pass
    raise PlatformError(f"not a dirac platform handle: {handle!r}")
