"""The canfar platform's notebook rules (pure): staged paths, batch commands, the notebook URL, the
judgement of an executed notebook, and the `notebook_mode` extension field against the schema."""

from __future__ import annotations

import json

import pytest

from services.launcher.platforms.canfar.notebooks import (
    StagedNotebook,
    batch_command,
    notebook_file_name,
    notebook_mode,
    notebook_url,
    read_executed,
)
from services.launcher.platforms.canfar.settings import CanfarSettings
from shared.models import JupyterNotebook, NotebookMode, to_jsonable
from shared.platforms.port import PlatformError
from tests.schema_validation import requires_schemas, validate_against

SETTINGS = CanfarSettings(storage_user="alice", storage_url="https://ws-uv.canfar.net/arc")


def test_paths_are_built_from_checked_segments_only() -> None:
    staged = StagedNotebook.of(SETTINGS, "eb-1234", "run.ipynb")
    assert staged.notebook == "home/alice/execution-broker/eb-1234/run.ipynb"
    assert staged.executed == "home/alice/execution-broker/eb-1234/executed-run.ipynb"
    assert staged.parents() == ["home/alice/execution-broker", "home/alice/execution-broker/eb-1234"]
    for folder, name in (("home/alice/../bob", "x.ipynb"), ("home/alice/eb", "../x.ipynb"), ("home//a", "x")):
        with pytest.raises(PlatformError, match="cannot be part of a path in ARC"):
            StagedNotebook.checked(folder, name)


@pytest.mark.parametrize(
    "location",
    [
        "https://h/%2E%2E%2F%2E%2E%2Fx.ipynb",
        "https://h/a%20b.ipynb",
        "https://h/.hidden.ipynb",
        "https://h/" + "a" * 120 + ".ipynb",
        "https://h/dir/",
        "file:///etc/x.ipynb",
        "ftp://h/x.ipynb",
    ],
)
def test_unsafe_notebook_names_and_locations_are_refused(location: str) -> None:
    with pytest.raises(PlatformError):
        notebook_file_name(location)


def test_a_plain_name_is_kept() -> None:
    assert notebook_file_name("https://h/a/b/My_run-2.ipynb?x=1") == "My_run-2.ipynb"


def test_batch_commands_have_no_spaces_inside_an_argument() -> None:
    staged = StagedNotebook.of(SETTINGS, "eb-1", "run.ipynb")
    folder = "/arc/home/alice/execution-broker/eb-1"
    assert batch_command(SETTINGS, staged) == [
        ("cmd", "papermill"),
        ("args", f"--log-output --cwd {folder} {folder}/run.ipynb {folder}/executed-run.ipynb"),
    ]
    nbconvert = SETTINGS.model_copy(update={"batch_runner": "nbconvert"})
    cmd, args = dict(batch_command(nbconvert, staged))["cmd"], dict(batch_command(nbconvert, staged))["args"]
    assert cmd == "jupyter" and args.endswith(f"--output executed-run.ipynb {folder}/run.ipynb")
    assert "--allow-errors" in args.split(" ")


def test_the_connector_opens_the_staged_notebook_and_keeps_the_token() -> None:
    staged = StagedNotebook.of(SETTINGS, "eb-1", "run.ipynb")
    skaha = "https://h/session/notebook/abc123/lab/tree/arc/home/alice?token=abc123"
    expected = "https://h/session/notebook/abc123/lab/tree/arc/home/alice/execution-broker/eb-1/run.ipynb?token=abc123"
    assert notebook_url(skaha, SETTINGS, staged) == expected
    assert notebook_url("https://h/session/notebook/abc123/?token=abc123", SETTINGS, staged) == expected


def test_an_executed_notebook_is_judged_by_its_outputs() -> None:
    def notebook(*outputs: list[dict[str, object]]) -> bytes:
        cells = [{"cell_type": "markdown", "source": "x"}]
        cells += [{"cell_type": "code", "outputs": list(o)} for o in outputs]
        return json.dumps({"cells": cells}).encode()

    ok = read_executed(notebook([{"output_type": "stream", "text": ["a\n", "b\n"]}]))
    assert ok.error is None and ok.printed == "a\nb"
    failed = read_executed(
        notebook(
            [{"output_type": "stream", "text": "before\n"}],
            [{"output_type": "error", "ename": "KeyError", "evalue": "'x'"}],
        )
    )
    assert failed.error == "cell 2 (counting from 0) failed: KeyError: 'x'" and failed.printed == "before"
    assert read_executed(b"not json").error == "the executed notebook is not a readable notebook"
    long = read_executed(notebook([{"output_type": "stream", "text": "".join(f"{i}\n" for i in range(500))}]))
    assert long.printed.splitlines()[-1] == "499" and len(long.printed.splitlines()) == 20


def test_notebook_mode_reads_the_field_with_interactive_by_default() -> None:
    assert notebook_mode({}) is NotebookMode.INTERACTIVE
    assert notebook_mode({"notebook_mode": "batch"}) is NotebookMode.BATCH
    with pytest.raises(PlatformError, match="interactive or batch"):
        notebook_mode({"notebook_mode": "BATCH!"})


@requires_schemas
@pytest.mark.parametrize("mode", [None, "batch", "interactive"])
def test_a_notebook_with_or_without_the_mode_validates_against_the_published_schema(mode: str | None) -> None:
    document = {"location": "https://h/run.ipynb"} | ({"notebook_mode": mode} if mode else {})
    notebook = JupyterNotebook.model_validate(document)
    dumped = to_jsonable(notebook)
    assert ("notebook_mode" in dumped) == (mode is not None)
    validate_against("JupyterNotebook", dumped)
    with pytest.raises(ValueError, match="notebook_mode"):
        JupyterNotebook.model_validate({"location": "x", "notebook_mode": "later"})
