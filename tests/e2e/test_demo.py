"""`broker demo` end to end, as a user runs it: one command, a table of offers, the phases, a notebook."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.helpers import HAPPY_PHASES, ROOT, cli_env

# The greeting printed by the first code cell of shared/examples/hello.ipynb (the Python version follows).
GREETING = "Hello from the Execution Broker, running Python"


def test_demo_runs_the_example_notebook_to_completed(tmp_path: Path) -> None:
    # TMPDIR puts the demo's data dir under tmp_path; a wide terminal keeps each line of output whole.
    result = subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", "demo"],
        cwd=ROOT, env=cli_env(TMPDIR=str(tmp_path), COLUMNS="400"),
        capture_output=True, text=True, timeout=170, check=False,
    )
    output = result.stdout
    assert result.returncode == 0, f"demo failed ({result.returncode}):\n{output}\n{result.stderr}"

    # The offer table: its title says YES, and its header names the columns.
    assert re.search(r"Offer set [0-9a-f-]{36}: YES", output), output
    header = next((line for line in output.splitlines() if "session" in line and "cores" in line), None)
    assert header is not None, output
    for column in ("start", "duration", "memory GiB", "expires"):
        assert column in header

    # Every phase of a successful run, once each and in order.
    phases = re.findall(r"^\s+\d+\.\d s\s+([A-Z]+)\s*$", output, flags=re.MULTILINE)
    assert tuple(phases) == HAPPY_PHASES, output

    # The executed notebook exists and holds the greeting its first cell printed.
    match = re.search(r"executed notebook: (\S+)", output)
    assert match is not None, output
    notebook = Path(match.group(1))
    assert notebook.is_file()
    assert notebook.is_relative_to(tmp_path)
    executed = json.loads(notebook.read_text(encoding="utf-8"))
    printed = "".join(
        "".join(out.get("text", ""))
        for cell in executed["cells"] if cell["cell_type"] == "code"
        for out in cell.get("outputs", []) if out.get("output_type") == "stream"
    )
    assert GREETING in printed
    assert "The sum of the squares of 1..10 is 385" in printed
