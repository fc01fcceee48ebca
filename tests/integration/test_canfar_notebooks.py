"""Notebooks on the canfar platform against the fake skaha: staged in ARC through the storage API,
then opened (interactive) or really executed by the fake's runner (batch)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.launcher.platforms.canfar.platform import CanfarPlatform, session_name
from shared.models import SIMPLE_DATA_KIND, SKAO_DATA_KIND
from shared.platforms.contract import launch, wait_for_final
from shared.platforms.port import LaunchSpec, PlatformError, RunState
from tests.fakes.serve import serve_asgi
from tests.fakes.skaha import FakeSkaha, SkahaConfig
from tests.integration.test_canfar_platform import NOTEBOOK_KIND, poll_until, session_id_of

NOTEBOOKS = Path(__file__).resolve().parents[1] / "data" / "notebooks"
TOKEN = "tok-nb-5e1d0c93-secret"
NOTEBOOK_IMAGE = "images.canfar.net/skaha/astroml:latest"
BATCH_IMAGE = "images.canfar.net/skaha/papermill:1.0"
RUN_TIMEOUT = 60.0


#: The Authorization headers the notebook server received (the CANFAR token must never go there).
SEEN_AUTHORIZATION: list[str] = []


def notebook_app() -> Starlette:
    """Serves the test notebooks by name, and one oversized file."""

    async def serve(request: Request) -> Response:
        if "authorization" in request.headers:
            SEEN_AUTHORIZATION.append(request.headers["authorization"])
        name = request.path_params["name"]
        if name == "huge.ipynb":
            return Response(b"{" + b" " * 4096 + b"}", media_type="application/json")
        path = NOTEBOOKS / name
        if not path.is_file():
            return Response("not found", status_code=404)
        return Response(path.read_bytes(), media_type="application/x-ipynb+json")

    return Starlette(routes=[Route("/nb/{name}", serve)])


@pytest.fixture
def fake() -> FakeSkaha:
    config = SkahaConfig(tokens={TOKEN: "alice"}, pending_s=0.2, term_s=0.3)
    return FakeSkaha(config)


@pytest.fixture
def urls(fake: FakeSkaha) -> Iterator[tuple[str, str]]:
    skaha, stop_skaha = serve_asgi(fake)
    notebooks, stop_notebooks = serve_asgi(notebook_app())
    yield skaha, notebooks
    stop_notebooks()
    stop_skaha()


def platform_for(skaha: str, **extra: Any) -> CanfarPlatform:
    settings: dict[str, Any] = {
        "url": f"{skaha}/skaha", "token": TOKEN, "poll_s": "0.1", "timeout_s": "5", "backoff_s": "0.01",
        "storage_url": f"{skaha}/arc", "storage_user": "alice", "notebook_image": NOTEBOOK_IMAGE,
        "batch_image": BATCH_IMAGE, "allowed_hosts": ["127.0.0.1"],
    }  # fmt: skip
    return CanfarPlatform(**(settings | extra))


def notebook_spec(tmp_path: Path, location: str, mode: str | None, name: str = "nb") -> LaunchSpec:
    executable: dict[str, Any] = {"kind": NOTEBOOK_KIND, "location": location}
    if mode is not None:
        executable["notebook_mode"] = mode
    return LaunchSpec(
        session_id=f"session-{tmp_path.name}-{name}",
        executable=executable,
        cores=1,
        memory_gib=1,
        slot_end=datetime.now(UTC) + timedelta(hours=1),
        work_dir=tmp_path / name,
    )


def folder_of(spec: LaunchSpec) -> str:
    return f"home/alice/execution-broker/{session_name(spec.session_id)}"


async def test_interactive_stages_the_notebook_and_its_connector_opens_it(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", None)
    handle = await launch(platform, spec)
    staged = f"{folder_of(spec)}/ok.ipynb"
    assert fake.arc.read(staged) == (NOTEBOOKS / "ok.ipynb").read_bytes()
    folders = [r for r in fake.recorded("PUT") if r["path"].startswith("/arc/nodes/")]
    assert [r["status"] for r in folders] == [201, 201]  # execution-broker/, then the session's
    (upload,) = fake.recorded("PUT", f"/arc/files/{staged}")
    assert upload["status"] == 201 and upload["headers"]["digest"].startswith("md5=")
    assert all(r["headers"]["authorization"] == "Bearer <redacted>" for r in fake.requests)
    assert not SEEN_AUTHORIZATION  # the notebook's own server never sees the CANFAR token
    form = fake.recorded("POST", "/skaha/v1/session")[0]["form"]
    assert ("type", "notebook") in form and ("image", NOTEBOOK_IMAGE) in form
    status = await poll_until(platform, spec, handle, RunState.RUNNING)
    (connector,) = status.connectors
    url = urlsplit(connector["location"])
    skaha_id = session_id_of(handle)
    assert url.path == f"/session/notebook/{skaha_id}/lab/tree/arc/{staged}"
    assert url.query == f"token={skaha_id}" and connector["status"] == "AVAILABLE"
    await platform.cancel(spec, handle)
    assert (await platform.poll(spec, handle)).state == RunState.CANCELLED
    await platform.aclose()


async def test_batch_really_runs_the_notebook_and_keeps_the_executed_copy(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", "batch")
    handle = await launch(platform, spec)
    form = fake.recorded("POST", "/skaha/v1/session")[0]["form"]
    folder = f"/arc/{folder_of(spec)}"
    assert ("type", "headless") in form and ("image", BATCH_IMAGE) in form and ("cmd", "papermill") in form
    assert ("args", f"--log-output --cwd {folder} {folder}/ok.ipynb {folder}/executed-ok.ipynb") in form
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    assert status.message and "hello from the notebook" in status.message
    executed = json.loads(await asyncio.to_thread(Path(status.outputs["notebook"]).read_text))
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "hello from the notebook" in printed
    assert status.outputs["notebook_arc"] == f"vos://cadc.nrc.ca~arc/{folder_of(spec)}/executed-ok.ipynb"
    assert fake.arc.read(f"{folder_of(spec)}/written-by-notebook.txt") == b"42"  # its cwd was the folder
    assert "hello from the notebook" in await asyncio.to_thread(Path(status.outputs["log"]).read_text)
    await platform.release(spec, handle)
    await platform.aclose()


@pytest.mark.parametrize("runner", ["papermill", "nbconvert"])
async def test_a_batch_notebook_whose_cell_raises_fails_with_the_error(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path, runner: str
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha, batch_runner=runner)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/failing.ipynb", "batch")
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED
    assert status.message is not None
    assert "cell 1 (counting from 0) failed: ValueError: deliberate failure for the tests" in status.message
    assert "before the failure" in status.message and "never printed" not in status.message
    assert "notebook" in status.outputs
    await platform.aclose()


async def test_a_batch_run_that_writes_no_notebook_fails_saying_so(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", "batch")
    await platform.prepare(spec)
    del fake.arc.files[f"{folder_of(spec)}/ok.ipynb"]  # gone before the session reads it
    handle = await platform.start(spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.FAILED and status.message
    assert "no executed notebook was written" in status.message and "No such file" in status.message
    await platform.aclose()


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("..%2F..%2Fetc%2Fpasswd.ipynb", "cannot be staged in ARC"),
        ("%2E%2E.ipynb", "cannot be staged in ARC"),
        ("with%20space.ipynb", "cannot be staged in ARC"),
        ("executed-x.ipynb", "cannot be staged in ARC"),
        ("notes.txt", "must end in .ipynb"),
        ("missing.ipynb", "HTTP 404"),
        ("huge.ipynb", "larger than 1000 bytes"),
    ],
)
async def test_hostile_or_oversized_notebooks_are_refused_before_anything_is_staged(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path, name: str, error: str
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha, max_notebook_bytes=1000)
    with pytest.raises(PlatformError, match=error):
        await platform.prepare(notebook_spec(tmp_path, f"{notebooks}/nb/{name}", "batch"))
    assert not fake.arc.files and not fake.recorded("POST", "/skaha/v1/session")
    await platform.aclose()


async def test_locations_the_launcher_must_not_fetch_are_refused(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path
) -> None:
    skaha, notebooks = urls
    guarded = platform_for(skaha, allowed_hosts=[])
    with pytest.raises(PlatformError, match=r"127\.0\.0\.1"):
        await guarded.prepare(notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", None))
    with pytest.raises(PlatformError, match="by http"):
        await guarded.prepare(notebook_spec(tmp_path, "/etc/passwd.ipynb", None))
    with pytest.raises(PlatformError, match="notebook_mode must be interactive or batch"):
        await guarded.prepare(notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", "later"))
    assert not fake.arc.files
    with pytest.raises(ValueError, match="CANFAR user name"):
        platform_for(skaha, storage_user="../bob")
    with pytest.raises(ValueError, match="no \\.\\."):
        platform_for(skaha, storage_folder="eb/../../bob")
    await guarded.aclose()


async def test_storage_refusals_fail_clearly_without_the_token(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    skaha, notebooks = urls
    other_user = platform_for(skaha, storage_user="bob")  # alice's token cannot write bob's home
    with pytest.raises(PlatformError) as caught:
        await other_user.prepare(notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", None))
    assert "HTTP 403" in caught.value.message and TOKEN not in caught.value.message
    fake.add_fault({"match": {"method": "PUT", "path": "/arc/files/*"}, "status": 503, "times": 1})
    platform = platform_for(skaha)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", None, name="retried")
    await platform.prepare(spec)  # the 503 is retried
    assert [r["status"] for r in fake.recorded("PUT", "/arc/files/*")] == [503, 201]
    assert TOKEN not in caplog.text
    await other_user.aclose()
    await platform.aclose()


async def test_the_storage_api_lists_and_reads_back(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", None)
    await platform.prepare(spec)
    storage = platform._storage
    assert await storage.listing(folder_of(spec)) == ["ok.ipynb"]
    assert session_name(spec.session_id) in (await storage.listing("home/alice/execution-broker") or [])
    assert (
        await storage.download(f"{folder_of(spec)}/ok.ipynb", 10**6) == (NOTEBOOKS / "ok.ipynb").read_bytes()
    )
    assert await storage.download(f"{folder_of(spec)}/none.ipynb", 10**6) is None
    assert await storage.listing("home/alice/nothing") is None
    with pytest.raises(PlatformError, match="larger than 10 bytes"):
        await storage.download(f"{folder_of(spec)}/ok.ipynb", 10)
    await platform.aclose()


def data_resource(location: str, name: str | None = "table.csv") -> dict[str, Any]:
    meta = {"name": name} if name else {}
    return {"kind": SIMPLE_DATA_KIND, "meta": meta, "location": location}


async def test_data_by_url_is_staged_beside_the_notebook_and_read_by_it(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/reads-data.ipynb", "batch")
    spec = spec.model_copy(update={"data": [data_resource(f"{notebooks}/nb/ok.ipynb", "input.json")]})
    await platform.prepare_data(spec, spec.data[0])
    assert fake.arc.read(f"{folder_of(spec)}/data/input.json") == (NOTEBOOKS / "ok.ipynb").read_bytes()
    handle = await launch(platform, spec)
    status = await wait_for_final(platform, spec, handle, RUN_TIMEOUT)
    assert status.state == RunState.SUCCEEDED, status.message
    assert status.message and "the data has 3 cells" in status.message  # the notebook read data/input.json
    await platform.aclose()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"kind": SKAO_DATA_KIND, "meta": {"name": "x"}}, "only simple data resources"),
        (data_resource("/etc/passwd"), "by http"),
        (data_resource("https://h/x", "../../bob"), "cannot be part of a path in ARC"),
        (data_resource("NOTEBOOKS/nb/%2E%2E", None), "cannot be part of a path in ARC"),
    ],
)
async def test_data_that_cannot_be_staged_is_refused(
    fake: FakeSkaha, urls: tuple[str, str], tmp_path: Path, data: dict[str, Any], error: str
) -> None:
    skaha, notebooks = urls
    platform = platform_for(skaha, max_data_bytes=10)
    spec = notebook_spec(tmp_path, f"{notebooks}/nb/ok.ipynb", "batch")
    data = json.loads(json.dumps(data).replace("NOTEBOOKS", notebooks))
    with pytest.raises(PlatformError, match=error):
        await platform.prepare_data(spec, data)
    with pytest.raises(PlatformError, match="larger than 10 bytes"):
        await platform.prepare_data(spec, data_resource(f"{notebooks}/nb/ok.ipynb"))
    assert not fake.arc.files
    await platform.aclose()
