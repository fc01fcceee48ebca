"""The e-MERLIN pipeline (eMCP) job of the `jbo` platform: built from a session, judged from its log.

Pure functions only (no I/O), so the mapping and the verdict are easy to test.

**Job model.** A session for the `jbo` pool is an ordinary IVOA `DockerContainer` executable plus
one data resource; no new executable kind is needed:

* `image.locations[0]` (and `image.digest`) name the eMCP container; it must start with one of the
  allowed image prefixes (default: the platform's default eMCP image repository).
* `command` carries the eMCP step selection exactly as on the eMCP command line: `-r/--run-steps`
  followed by step names or the groups `pre_processing`, `calibration`, `all`, and optionally
  `-s/--skip-steps` followed by step names. Anything before the first option (for example
  `eMERLIN_CASA_pipeline.py` or `casa -c …`) names the program and is ignored: the runner owns how
  eMCP is invoked. `-i` is refused (the platform writes `inputs.ini`). No command: `calibration`
  for a measurement set, `all` for FITS-IDI.
* `environment` carries the `inputs.ini` fields: `EMCP_TARGETS`, `EMCP_PHSCALS`, `EMCP_FLUXCAL`,
  `EMCP_BPCAL`, `EMCP_PTCAL`, `EMCP_REFANT`, optionally `EMCP_INBASE` (defaults to the observation
  id); `EMCP_PARAMS` (a JSON object `{section: {key: value}}` merged into `default_params.json`);
  `EMCP_FLAGS_OBSERVATORY|MANUAL|MANUAL_AVG|MANUAL_NARROW` (the text of the flag files). Every other
  variable is passed to the container's environment unchanged.
* The one data resource names the observation (see `input_from_data`).
* Cores and memory come from the booked compute, the wall-clock limit from the booked slot.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from shared.models.data_products import NotADataProduct, data_product_did
from shared.platforms.port import PlatformError, RunState

# §3.2 of the eMCP notes: the steps of each group, in the order the pipeline runs them.
PRE_PROCESSING_STEPS = (
    "run_importfits", "flag_aoflagger", "flag_apriori", "flag_manual", "average", "plot_data", "save_flags",
)  # fmt: skip
CALIBRATION_STEPS = (
    "restore_flags", "flag_manual_avg", "init_models", "bandpass", "initial_gaincal", "fluxscale",
    "bandpass_final", "gaincal_final", "applycal_all", "flag_target", "plot_corrected", "first_images",
    "split_fields",
)  # fmt: skip
ALL_STEPS = PRE_PROCESSING_STEPS + CALIBRATION_STEPS
STEP_GROUPS = {"pre_processing": PRE_PROCESSING_STEPS, "calibration": CALIBRATION_STEPS, "all": ALL_STEPS}

# inputs.ini keys taken from the executable's environment, in the order they are written.
FIELD_VARIABLES = {
    "targets": "EMCP_TARGETS",
    "phscals": "EMCP_PHSCALS",
    "fluxcal": "EMCP_FLUXCAL",
    "bpcal": "EMCP_BPCAL",
    "ptcal": "EMCP_PTCAL",
    "refant": "EMCP_REFANT",
}
DEFAULT_FIELDS = {"fluxcal": "1331+305", "bpcal": "1407+284", "ptcal": "0319+415"}
FLAG_VARIABLES = {
    "observatory": "EMCP_FLAGS_OBSERVATORY",
    "manual": "EMCP_FLAGS_MANUAL",
    "manual_avg": "EMCP_FLAGS_MANUAL_AVG",
    "manual_narrow": "EMCP_FLAGS_MANUAL_NARROW",
}
INBASE_VARIABLE = "EMCP_INBASE"
PARAMS_VARIABLE = "EMCP_PARAMS"
# Where the runner stages FITS-IDI input, relative to the job's working directory.
FITS_DIR = "fits"

_OBSERVATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")
_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_MS_SUFFIXES = (".ms", ".mms")
_FITS_SUFFIXES = (".fits", ".fits-idi", ".idifits")

# Markers written by eMCP to eMCP.log (§3.6).
LOG_FINISHED = "Pipeline finished"
LOG_WENT_WRONG = "Something went wrong"
_STEP_LINE = re.compile(r"\b(Start|End) (\w+)")


@dataclass(frozen=True)
class PipelineInput:
    kind: str  # "ms" | "fitsidi"
    uri: str
    observation_id: str
    data_name: str


@dataclass(frozen=True)
class StepSelection:
    mode: str  # "calibration" | "full" | "custom"
    steps: tuple[str, ...]
    skip_steps: tuple[str, ...]

    @property
    def effective(self) -> tuple[str, ...]:
        return tuple(step for step in self.steps if step not in self.skip_steps)

    @property
    def run_steps_argument(self) -> list[str]:
        if self.mode == "full":
            return ["all"]
        if self.mode == "calibration":
            return ["calibration"]
        return list(self.steps)


# -- data -----------------------------------------------------------------------------------------


def _strip_ms_name(name: str) -> str:
    base = name.rstrip("/")
    base = posixpath.basename(base)
    for suffix in (*_MS_SUFFIXES, *_FITS_SUFFIXES, ".tar", ".tar.gz", ".tgz"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    for suffix in ("_avg", "_sp"):
        base = base.removesuffix(suffix)
    return base


def _kind_from_name(name: str) -> str | None:
    lowered = name.rstrip("/").lower()
    if lowered.endswith(_MS_SUFFIXES):
        return "ms"
    if lowered.endswith(_FITS_SUFFIXES):
        return "fitsidi"
    return None


def _candidate(data: dict[str, Any]) -> tuple[str, str | None] | None:
    """(uri, observation id if the resource states it) of one IVOA data resource, or None."""
    kind = str(data.get("kind") or "")

    def block(name: str) -> dict[str, Any]:
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    obscore = block("ivoa").get("obscore")
    obscore = obscore if isinstance(obscore, dict) else {}
    datalink = block("ivoa").get("datalink")
    datalink = datalink if isinstance(datalink, dict) else {}
    obs_id = obscore.get("obs_id") if isinstance(obscore.get("obs_id"), str) else None

    if kind.endswith("simple-data-resource.yaml"):
        location = data.get("location")
        return (location, None) if isinstance(location, str) and location.strip() else None
    try:
        product = data_product_did(data)
    except NotADataProduct:
        product = None  # refused by the offers service; here it is just not a DID
    if product is not None:
        # An ivo:// data product or SKAO object is a Rucio DID, staged as a RucioDataResource is.
        return product.did, obs_id
    if kind.endswith("skao-data-resource.yaml"):
        skao = block("skao")
        namespace, name = skao.get("namespace"), skao.get("objectname")
        if isinstance(name, str) and name:
            uri = f"{namespace}:{name}" if isinstance(namespace, str) and namespace else name
            return uri, obs_id
    if kind.endswith(("ivoa-data-resource.yaml", "skao-data-resource.yaml")):
        for url in (obscore.get("access_url"), datalink.get("access_url")):
            if isinstance(url, str) and url:
                return url, obs_id
        return None
    if kind.endswith("rucio-data-resource.yaml"):
        rucio = block("rucio")
        scope, name = rucio.get("scope"), rucio.get("object")
        if isinstance(scope, str) and scope and isinstance(name, str) and name:
            return f"{scope}:{name}", None
        return None
    if kind.endswith("S3-data-resource.yaml"):
        bucket, name = data.get("bucket"), data.get("object")
        if isinstance(bucket, str) and bucket and isinstance(name, str) and name:
            return f"s3://{bucket}/{name}", None
        return None
    return None


def input_from_data(data: list[dict[str, Any]], requested_steps: tuple[str, ...] | None) -> PipelineInput:
    """The pipeline input from the session's data resources; exactly one must be usable.

    * SimpleDataResource: `location` (a path or URL of a measurement set or FITS-IDI).
    * IvoaDataResource: the Rucio DID its ivoid names (`ivo://<authority>/<path>?<scope>:<name>`),
      else `ivoa.obscore.access_url` (else `ivoa.datalink.access_url`), with the observation id from
      `ivoa.obscore.obs_id` when given.
    * SkaoDataResource: the Rucio DID `skao.namespace:skao.objectname` (else the IVOA block).
    * RucioDataResource: `rucio.scope:rucio.object`; S3DataResource: `s3://bucket/object`.

    The observation id (eMCP's `inbase`) is the obs_id, else the object's base name without
    `.ms`/`.mms`/`.fits` and `_avg`/`_sp`. The input kind is `ms` for `.ms`/`.mms`, `fitsidi` for
    `.fits*`; otherwise FITS-IDI when the steps import FITS (`run_importfits`), else `ms`.
    """
    if not data:
        raise PlatformError(
            "the jbo platform needs a data resource naming the e-MERLIN observation "
            "(a measurement set or FITS-IDI), and the request has none"
        )
    usable: list[tuple[str, str, str | None]] = []
    for index, item in enumerate(data):
        candidate = _candidate(item)
        if candidate is not None:
            meta = item.get("meta")
            name = meta.get("name") if isinstance(meta, dict) else None
            usable.append((str(name or f"data[{index}]"), *candidate))
    if not usable:
        kinds = ", ".join(sorted({str(item.get("kind", "(no kind)")).rsplit("/", 1)[-1] for item in data}))
        raise PlatformError(
            "the jbo platform found no usable data resource: it needs a location, an access URL "
            f"or a Rucio DID naming the e-MERLIN observation (got: {kinds})"
        )
    if len(usable) > 1:
        names = ", ".join(name for name, _, _ in usable)
        raise PlatformError(
            f"the jbo platform runs one observation per session, but the request has {len(usable)} ({names})"
        )
    name, uri, obs_id = usable[0]
    leaf = urlparse(uri).path if "://" in uri else uri.rsplit(":", 1)[-1]
    observation_id = obs_id or _strip_ms_name(leaf)
    if not _OBSERVATION_ID.match(observation_id):
        raise PlatformError(
            f"cannot take an e-MERLIN observation id from data resource {name!r}: {observation_id!r} "
            "is not a name like TS8004_C_001_20190801"
        )
    kind = _kind_from_name(leaf)
    if kind is None:
        imports = requested_steps is not None and "run_importfits" in requested_steps
        kind = "fitsidi" if imports else "ms"
    return PipelineInput(kind=kind, uri=uri, observation_id=observation_id, data_name=name)


# -- steps ----------------------------------------------------------------------------------------

_RUN_OPTIONS = ("-r", "--run-steps", "--run_steps")
_SKIP_OPTIONS = ("-s", "--skip-steps", "--skip_steps")


def parse_command(command: list[str] | None) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(the -r words or None, the -s words) of a DockerContainer command; see the module docstring."""
    words = [str(word) for word in command or []]
    first = next((i for i, word in enumerate(words) if word.startswith("-") and word not in ("-c",)), None)
    if first is None:
        return None, ()
    run: list[str] | None = None
    skip: list[str] = []
    current: list[str] | None = None
    for word in words[first:]:
        if word in _RUN_OPTIONS:
            run = run if run is not None else []
            current = run
        elif word in _SKIP_OPTIONS:
            current = skip
        elif word.startswith("-"):
            if word in ("-i", "--inputs"):
                raise PlatformError("the jbo platform writes inputs.ini itself: remove -i from the command")
            raise PlatformError(f"unknown eMCP option {word!r} in the command (only -r and -s are allowed)")
        elif current is None:
            raise PlatformError(f"unexpected word {word!r} in the eMCP command")
        else:
            current.extend(part for part in word.split(",") if part)
    if run is not None and not run:
        raise PlatformError("-r in the eMCP command needs step names or pre_processing, calibration, all")
    return (tuple(run) if run is not None else None), tuple(skip)


def select_steps(run: tuple[str, ...] | None, skip: tuple[str, ...], input_kind: str) -> StepSelection:
    if run is None:
        run = ("all",) if input_kind == "fitsidi" else ("calibration",)
    unknown = [step for step in (*run, *skip) if step not in ALL_STEPS and step not in STEP_GROUPS]
    if unknown:
        raise PlatformError(
            f"unknown eMCP step(s) {', '.join(unknown)}; the steps are {', '.join(ALL_STEPS)} "
            "and the groups pre_processing, calibration, all"
        )
    expanded: list[str] = []
    for word in run:
        for step in STEP_GROUPS.get(word, (word,)):
            if step not in expanded:
                expanded.append(step)
    ordered = tuple(step for step in ALL_STEPS if step in expanded)
    skipped = tuple(step for step in ALL_STEPS if any(step in STEP_GROUPS.get(w, (w,)) for w in skip))
    if run == ("all",):
        mode = "full"
    elif run == ("calibration",):
        mode = "calibration"
    else:
        mode = "custom"
    selection = StepSelection(mode=mode, steps=ordered, skip_steps=skipped)
    if not selection.effective:
        raise PlatformError("the eMCP command skips every step it runs")
    if "run_importfits" in selection.effective and input_kind != "fitsidi":
        raise PlatformError(
            "run_importfits (part of pre_processing and all) needs FITS-IDI input, "
            "but the data resource is a measurement set"
        )
    return selection


# -- inputs ---------------------------------------------------------------------------------------


def inputs_ini(observation_id: str, environment: dict[str, str]) -> str:
    """The eMCP `inputs.ini` ([inputs] section, §3.2), with `fits_path` where the runner stages FITS."""
    values: dict[str, str] = {"fits_path": FITS_DIR, "inbase": observation_id}
    for key, variable in FIELD_VARIABLES.items():
        value = environment.get(variable, DEFAULT_FIELDS.get(key, "")).strip()
        names = [name.strip() for name in value.split(",") if name.strip()]
        bad = [name for name in names if not _SOURCE_NAME.match(name)]
        if bad:
            raise PlatformError(f"{variable} has names eMCP cannot take: {', '.join(bad)}")
        values[key] = ", ".join(names)
    for key in ("targets", "phscals"):
        if not values[key]:
            raise PlatformError(f"the eMCP inputs need {FIELD_VARIABLES[key]} (a comma list of sources)")
    if len(values["targets"].split(",")) != len(values["phscals"].split(",")):
        raise PlatformError(
            "EMCP_TARGETS and EMCP_PHSCALS must list the same number of sources, in matching order"
        )
    lines = ["[inputs]"] + [f"{key} = {value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def param_overrides(environment: dict[str, str]) -> dict[str, dict[str, Any]]:
    text = environment.get(PARAMS_VARIABLE)
    if not text:
        overrides: dict[str, dict[str, Any]] = {}
    else:
        try:
            parsed = json.loads(text)
        except ValueError as error:
            raise PlatformError(f"{PARAMS_VARIABLE} is not JSON: {error}") from error
        if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
            raise PlatformError(
                f"{PARAMS_VARIABLE} must be a JSON object of sections: {{section: {{key: value}}}}"
            )
        overrides = parsed
    # An offline container must not try to download CASA data (§3.2): off unless asked for.
    global_section = dict(overrides.get("global", {}))
    global_section.setdefault("update_casa-data", False)
    return {**overrides, "global": global_section}


def build_job(
    *,
    session_id: str,
    executable: dict[str, Any],
    data: list[dict[str, Any]],
    cores: int,
    memory_gib: int,
    walltime_s: int,
    default_image: str,
    allowed_images: tuple[str, ...],
    pipeline_version: str,
) -> dict[str, Any]:
    """The job document POSTed to the JBO runner (§3.8), from one session's components."""
    image_block = executable.get("image")
    locations = image_block.get("locations") if isinstance(image_block, dict) else None
    image = (
        locations[0] if isinstance(locations, list) and locations and isinstance(locations[0], str) else ""
    )
    image = image or default_image
    if not any(image.startswith(prefix) for prefix in allowed_images):
        raise PlatformError(
            f"the jbo platform only runs the e-MERLIN pipeline image; {image!r} is not one of "
            f"{', '.join(allowed_images)}"
        )
    digest = image_block.get("digest") if isinstance(image_block, dict) else None
    if executable.get("privileged"):
        raise PlatformError("the jbo platform does not run privileged containers")
    raw_env = executable.get("environment")
    environment = {str(k): str(v) for k, v in raw_env.items()} if isinstance(raw_env, dict) else {}
    command = executable.get("command")
    run, skip = parse_command(command if isinstance(command, list) else None)
    pipeline_input = input_from_data(data, run and _expand(run))
    steps = select_steps(run, skip, pipeline_input.kind)
    observation_id = environment.get(INBASE_VARIABLE, "").strip() or pipeline_input.observation_id
    if not _OBSERVATION_ID.match(observation_id):
        raise PlatformError(f"{INBASE_VARIABLE} {observation_id!r} is not a valid eMCP inbase")
    ini = inputs_ini(observation_id, environment)
    flags = {
        name: environment[variable] for name, variable in FLAG_VARIABLES.items() if environment.get(variable)
    }
    reserved = {INBASE_VARIABLE, PARAMS_VARIABLE, *FIELD_VARIABLES.values(), *FLAG_VARIABLES.values()}
    passthrough = {key: value for key, value in environment.items() if key not in reserved}
    fields = {key: [name.strip() for name in value.split(",")] if key in ("targets", "phscals") else value
              for key, value in _ini_values(ini).items() if key in FIELD_VARIABLES}  # fmt: skip
    return {
        "kind": "emerlin-emcp",
        "name": session_id,
        "observation_id": observation_id,
        "mode": steps.mode,
        "run_steps": steps.run_steps_argument,
        "steps": list(steps.steps),
        "skip_steps": list(steps.skip_steps),
        "fields": fields,
        "inputs_ini": ini,
        "param_overrides": param_overrides(environment),
        "flags": flags,
        "input": {
            "kind": pipeline_input.kind,
            "uri": pipeline_input.uri,
            "data_resource": pipeline_input.data_name,
        },
        "image": image,
        "image_digest": digest if isinstance(digest, str) else None,
        "pipeline_version": pipeline_version,
        "environment": passthrough,
        "resources": {"cpus": cores, "mem_gb": memory_gib, "walltime_s": walltime_s, "mpi_ranks": 0},
    }


def _expand(run: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(step for word in run for step in STEP_GROUPS.get(word, (word,)))


def _ini_values(ini: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ini.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key] = value
    return values


# -- verdict --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepProgress:
    started: tuple[str, ...]
    ended: tuple[str, ...]
    finished: bool
    went_wrong: bool

    @property
    def failing_step(self) -> str | None:
        """The last step that started and never ended."""
        for step in reversed(self.started):
            if step not in self.ended:
                return step
        return None


def read_log(text: str) -> StepProgress:
    started: list[str] = []
    ended: list[str] = []
    for match in _STEP_LINE.finditer(text):
        (started if match.group(1) == "Start" else ended).append(match.group(2))
    return StepProgress(tuple(started), tuple(ended), LOG_FINISHED in text, LOG_WENT_WRONG in text)


def expected_artefacts(job: dict[str, Any]) -> list[str]:
    """What a successful run must leave (§3.6): the weblog, its info file, the calibrated MS."""
    expected = ["weblog/index.html", "weblog/info/eMCP_info.txt"]
    steps = set(job.get("steps") or []) - set(job.get("skip_steps") or [])
    if steps & set(CALIBRATION_STEPS):
        expected.append(f"{job['observation_id']}_avg.ms")
    return expected


def judge(
    runner_state: str,
    exit_code: int | None,
    reason: str | None,
    log_text: str,
    files: list[str],
    job: dict[str, Any],
) -> tuple[RunState, str]:
    """The run's outcome from the runner's report, eMCP.log and the outputs; never from exit 0 alone."""
    progress = read_log(log_text)
    step = progress.failing_step
    at_step = f" at step {step}" if step else ""
    if runner_state == "CANCELLED":
        return RunState.CANCELLED, f"the eMCP job was cancelled on the JBO runner{at_step}"
    if runner_state == "FAILED":
        why = reason or "unknown reason"
        code = f", exit code {exit_code}" if exit_code is not None else ""
        return RunState.FAILED, f"the eMCP job failed on the JBO runner ({why}{code}){at_step}"
    # The runner says the process ended well; eMCP exits 0 even when it fails (§3.6), so check.
    if progress.went_wrong or not progress.finished:
        said = (
            f"eMCP.log says '{LOG_WENT_WRONG}'"
            if progress.went_wrong
            else f"eMCP.log never says '{LOG_FINISHED}'"
        )
        return (
            RunState.FAILED,
            f"the e-MERLIN pipeline failed{at_step or ' (no step recorded)'}: {said} (exit code {exit_code})",
        )
    present = {path.rstrip("/") for path in files}
    missing = [path for path in expected_artefacts(job) if path not in present]
    if missing:
        return RunState.FAILED, f"the e-MERLIN pipeline finished but left no {', '.join(missing)}"
    return (
        RunState.SUCCEEDED,
        f"the e-MERLIN pipeline finished {len(progress.ended)} step(s) for {job['observation_id']}",
    )
