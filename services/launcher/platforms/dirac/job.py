"""Pure parts of the `dirac` platform: the batch job built from a launch spec, and what a Slurm job
record means for the run.

No I/O here: `dirac.py` sends what this module builds and feeds back what slurmrestd answers.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.models import DOCKER_CONTAINER_KIND, LOCAL_COMMAND_KIND, SINGULARITY_CONTAINER_KIND
from shared.platforms.port import LaunchSpec, PlatformError, RunState, RunStatus

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
THREAD_LIMIT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CANCELLED_MESSAGE = "cancelled by request"
# Base states of a finished job (job_state[0]); flags follow it in the array.
FAILED_STATES = {
    "FAILED": "failed",
    "TIMEOUT": "reached its time limit",
    "OUT_OF_MEMORY": "ran out of memory",
    "NODE_FAIL": "lost its node",
    "BOOT_FAIL": "could not boot its node",
    "DEADLINE": "missed its deadline",
    "PREEMPTED": "was preempted",
}


def job_name(session_id: str) -> str:
    return f"eb-{session_id}"


def job_comment(session_id: str) -> str:
    """Marks the job as this session's, so a submit whose answer was lost can be found again."""
    return f"execution-broker:{session_id}"


def job_dir(work_root: str, session_id: str) -> str:
    return f"{work_root.rstrip('/')}/{session_id}"


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlatformError(f"{what} must be a list of strings")
    if any("\0" in v for v in value):
        raise PlatformError(f"{what} contains a NUL character")
    return list(value)


def _image_reference(executable: dict[str, Any]) -> str:
    image = executable.get("image")
    locations = image.get("locations") if isinstance(image, dict) else None
    if (
        not isinstance(locations, list)
        or not locations
        or not isinstance(locations[0], str)
        or not locations[0]
    ):
        raise PlatformError("a DockerContainer executable needs image.locations")
    location: str = locations[0]
    digest = image.get("digest") if isinstance(image, dict) else None
    if isinstance(digest, str) and digest and "@" not in location:
        location = f"{location}@{digest}"
    return location if "://" in location else f"docker://{location}"


def command_argv(spec: LaunchSpec, apptainer: str) -> list[str]:
    """The argv the batch script runs, by executable kind."""
    executable = spec.executable
    kind = spec.executable_kind
    if kind == LOCAL_COMMAND_KIND:
        command = _strings(executable.get("command"), "the LocalCommand command")
        if not command or not command[0]:
            raise PlatformError("a LocalCommand executable needs a command: a non-empty list of strings")
        return command
    if kind == DOCKER_CONTAINER_KIND:
        image = _image_reference(executable)
        command = _strings(executable.get("command"), "the DockerContainer command")
        entrypoint = executable.get("entrypoint")
        if entrypoint is not None and (not isinstance(entrypoint, str) or not entrypoint):
            raise PlatformError("the DockerContainer entrypoint must be a non-empty string")
        if entrypoint:
            # An explicit entrypoint replaces the image's: exec runs exactly that program.
            return [apptainer, "exec", image, entrypoint, *command]
        # Without one, Docker runs the image's ENTRYPOINT with `command` as its CMD: so does `run`.
        return [apptainer, "run", image, *command]
    if kind == SINGULARITY_CONTAINER_KIND:
        location = executable.get("location")
        if not isinstance(location, str) or not location or "\0" in location:
            raise PlatformError("a SingularityContainer executable needs a location")
        command = _strings(executable.get("command"), "the SingularityContainer command")
        return [apptainer, "exec", location, *command] if command else [apptainer, "run", location]
    raise PlatformError(f"the dirac platform cannot run executables of kind {kind or '(none)'}")


def batch_script(spec: LaunchSpec, work_root: str, apptainer: str) -> str:
    directory = job_dir(work_root, spec.session_id)
    argv = command_argv(spec, apptainer)
    return (
        "#!/bin/bash\n"
        f"# execution broker session {spec.session_id}\n"
        "set -euo pipefail\n"
        f"mkdir -p {shlex.quote(directory)}\n"
        f"cd {shlex.quote(directory)}\n"
        f"exec {shlex.join(argv)}\n"
    )


def _checked(variables: Any, where: str) -> dict[str, str]:
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise PlatformError(f"{where} must map strings to strings")
    for name, value in variables.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise PlatformError(f"{where} must map strings to strings")
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise PlatformError(f"{where} has an invalid variable name or value: {name!r}")
    return dict(variables)


def job_environment(spec: LaunchSpec) -> list[str]:
    """The job's `environment` array: never empty (Slurm refuses that, error 2127).

    A PATH first, then the booking's thread limits, then the launcher's and the user's variables,
    so the user can still override the defaults; Apptainer passes them into the container.
    """
    variables = (
        {"PATH": DEFAULT_PATH}
        | dict.fromkeys(THREAD_LIMIT_VARIABLES, str(spec.cores))
        | _checked(spec.environment, "the launch environment")
        | _checked(spec.executable.get("environment"), "the executable's environment")
        | {"EB_SESSION_ID": spec.session_id}
    )
    return [f"{name}={value}" for name, value in variables.items()]


def time_limit_minutes(slot_end: datetime, now: datetime) -> int:
    """Whole minutes until the end of the booked slot (at least 1): Slurm's own stop."""
    return max(1, math.ceil((slot_end - now).total_seconds() / 60))


def submit_body(
    spec: LaunchSpec, *, partition: str, account: str, work_root: str, apptainer: str, now: datetime
) -> dict[str, Any]:
    directory = job_dir(work_root, spec.session_id)
    return {
        "job": {
            "name": job_name(spec.session_id),
            "comment": job_comment(spec.session_id),
            "account": account,
            "partition": partition,
            "nodes": "1",
            "tasks": 1,
            "cpus_per_task": spec.cores,
            "memory_per_node": no_val(spec.memory_gib * 1024),
            "time_limit": no_val(time_limit_minutes(spec.slot_end, now)),
            # The work root must exist; the script makes the session's own folder below it.
            "current_working_directory": work_root,
            "standard_output": f"{directory}/slurm-%j.out",
            "standard_error": f"{directory}/slurm-%j.out",
            "environment": job_environment(spec),
            "script": batch_script(spec, work_root, apptainer),
        }
    }


def no_val(number: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": number}


def read_no_val(value: Any) -> int | None:
    if isinstance(value, dict):
        if not value.get("set", False) or value.get("infinite", False):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


# -- job records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobView:
    """The parts of a job record that decide the run's status, from /slurm or from /slurmdb."""

    job_id: int
    states: tuple[str, ...]
    reason: str
    exit_status: tuple[str, ...]
    return_code: int | None
    signal: int | None
    signal_name: str
    stdout: str | None


def _state_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # v0.0.39 and older: one string
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("job_state is neither a list of strings nor a string")


def _exit_parts(exit_code: Any) -> tuple[tuple[str, ...], int | None, int | None, str]:
    if not isinstance(exit_code, dict):
        return (), None, None, ""
    status = exit_code.get("status")
    statuses = tuple(s for s in status if isinstance(s, str)) if isinstance(status, list) else ()
    signal = exit_code.get("signal")
    signal_id = read_no_val(signal.get("id")) if isinstance(signal, dict) else None
    signal_name = signal.get("name") if isinstance(signal, dict) else ""
    return statuses, read_no_val(exit_code.get("return_code")), signal_id, str(signal_name or "")


def _stdout(record: dict[str, Any], key: str, job_id: int) -> str | None:
    expanded = record.get("stdout_expanded")
    if isinstance(expanded, str) and expanded:
        return expanded
    pattern = record.get(key)
    return pattern.replace("%j", str(job_id)) if isinstance(pattern, str) and pattern else None


def view_from_slurm(document: dict[str, Any], job_id: int) -> JobView | None:
    """`GET /slurm/{v}/job/{id}`; None when the answer lists no job. Raises ValueError if malformed."""
    record = _first_job(document, job_id)
    if record is None:
        return None
    statuses, code, signal, name = _exit_parts(record.get("exit_code"))
    return JobView(
        job_id=job_id,
        states=_state_list(record.get("job_state")),
        reason=str(record.get("state_reason") or "None"),
        exit_status=statuses,
        return_code=code,
        signal=signal,
        signal_name=name,
        stdout=_stdout(record, "standard_output", job_id),
    )


def view_from_slurmdb(document: dict[str, Any], job_id: int) -> JobView | None:
    """`GET /slurmdb/{v}/job/{id}`: the accounting record of a job slurmctld has forgotten."""
    record = _first_job(document, job_id)
    if record is None:
        return None
    state = record.get("state")
    if not isinstance(state, dict):
        raise ValueError("the accounting record has no state")
    statuses, code, signal, name = _exit_parts(record.get("exit_code"))
    return JobView(
        job_id=job_id,
        states=_state_list(state.get("current")),
        reason=str(state.get("reason") or "None"),
        exit_status=statuses,
        return_code=code,
        signal=signal,
        signal_name=name,
        stdout=_stdout(record, "stdout", job_id),
    )


def _first_job(document: dict[str, Any], job_id: int) -> dict[str, Any] | None:
    jobs = document.get("jobs")
    if not isinstance(jobs, list):
        raise ValueError("the answer has no 'jobs' list")
    for record in jobs:
        if isinstance(record, dict) and record.get("job_id") == job_id:
            return record
    return None


def _exit_text(view: JobView) -> str:
    code = view.return_code if view.return_code is not None else 0
    text = f"exit code {code}"
    if "SIGNALED" in view.exit_status and view.signal:
        text += f", killed by signal {view.signal}" + (f" ({view.signal_name})" if view.signal_name else "")
    return text


def run_status(view: JobView, *, cancel_requested: bool, outputs: dict[str, str]) -> RunStatus:
    """What a Slurm job's state means for the run (reference §2.5)."""
    base = view.states[0] if view.states else "UNKNOWN"
    flags = set(view.states[1:])
    job = f"Slurm job {view.job_id}"
    reason = f" ({view.reason})" if view.reason not in ("", "None") else ""
    if base == "PENDING":
        return RunStatus(state=RunState.PREPARING, message=f"{job} is pending{reason}")
    if "COMPLETING" in flags and base in (
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
    ):
        # Not final until the nodes have cleaned up.
        return RunStatus(state=RunState.RUNNING, message=f"{job} is completing")
    if base in ("RUNNING", "SUSPENDED"):
        if "CONFIGURING" in flags:
            return RunStatus(state=RunState.PREPARING, message=f"{job} is starting (nodes configuring)")
        return RunStatus(state=RunState.RUNNING, message=f"{job} is {base.lower()}")
    if base == "COMPLETED":
        if view.return_code in (None, 0) and "SIGNALED" not in view.exit_status:
            return RunStatus(
                state=RunState.SUCCEEDED, message=f"{job} completed, exit code 0", outputs=outputs
            )
        return RunStatus(
            state=RunState.FAILED, message=f"{job} completed with {_exit_text(view)}", outputs=outputs
        )
    if base == "CANCELLED":
        if cancel_requested:
            return RunStatus(state=RunState.CANCELLED, message=CANCELLED_MESSAGE, outputs=outputs)
        return RunStatus(
            state=RunState.FAILED,
            message=f"{job} was cancelled on the cluster, not by the broker{reason}",
            outputs=outputs,
        )
    if base in FAILED_STATES:
        return RunStatus(
            state=RunState.FAILED,
            message=f"{job} {FAILED_STATES[base]}: {base}{reason}, {_exit_text(view)}",
            outputs=outputs,
        )
    # An unknown state: not final; the launcher still stops the run at the end of its slot.
    return RunStatus(state=RunState.RUNNING, message=f"{job} is in state {'+'.join(view.states) or '?'}")
