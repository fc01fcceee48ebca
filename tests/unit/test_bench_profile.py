"""`broker bench --profile`: py-spy's collapsed stacks summarised into where the time goes, and the
live-session count that goes with the memory figures."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from shared.ops import bench_profile
from shared.ops.bench import live_sessions
from shared.ops.bench_profile import FunctionShare, ProfileError, ServiceProfiler, summarise

# py-spy's raw format: frames outermost first, `function (file:line)`, then the sample count.
COLLAPSED = """\
main (app.py:1);handle (app.py:10);parse (json.py:5) 8
main (app.py:1);handle (app.py:12);encode (json.py:20) 4
main (app.py:1);walk (tree.py:3);walk (tree.py:7) 5
main (app.py:1);idle (app.py:30) 3

not a stack line
""".splitlines()


def test_summarise_gives_inclusive_and_self_shares() -> None:
    # 20 samples. `handle` at two lines is one function; the recursive `walk` counts once per
    # stack; `main` is on every stack with no sample of its own, so it is left out.
    assert summarise(COLLAPSED) == [
        ("handle (app.py)", 60.0, 0.0),
        ("parse (json.py)", 40.0, 40.0),
        ("walk (tree.py)", 25.0, 25.0),
        ("encode (json.py)", 20.0, 20.0),
        ("idle (app.py)", 15.0, 15.0),
    ]


def test_summarise_keeps_the_top_by_inclusive_and_the_top_by_self() -> None:
    assert summarise(COLLAPSED, top=1) == [
        FunctionShare("handle (app.py)", 60.0, 0.0),
        FunctionShare("parse (json.py)", 40.0, 40.0),
    ]


def test_summarise_of_nothing_is_empty() -> None:
    assert summarise([]) == []
    assert summarise(["garbage", ""]) == []


def test_profiler_without_py_spy_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_profile, "py_spy_binary", lambda: None)
    with pytest.raises(ProfileError, match="py-spy not found"):
        ServiceProfiler(tmp_path, "offers-c10").start({"offers": 1})


def test_live_sessions_counts_the_phases_that_are_not_terminal(tmp_path: Path) -> None:
    (tmp_path / "offers").mkdir()
    phases = ["OFFERED", "OFFERED", "WAITING", "RUNNING", "COMPLETED", "EXPIRED", "REJECTED", "CANCELLED"]
    with closing(sqlite3.connect(tmp_path / "offers" / "offers.sqlite")) as db:
        db.execute("CREATE TABLE sessions (session_id TEXT PRIMARY KEY, phase TEXT NOT NULL)")
        db.executemany("INSERT INTO sessions VALUES (?, ?)", [(str(i), p) for i, p in enumerate(phases)])
        db.commit()
    assert live_sessions(tmp_path) == 4


def test_live_sessions_without_the_file_is_unknown(tmp_path: Path) -> None:
    assert live_sessions(tmp_path) is None
