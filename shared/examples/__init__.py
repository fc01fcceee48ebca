"""The example requests and notebook, shipped as package data so they work from an installed wheel."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

NAMES = ("hello-notebook.yaml", "hello-command.yaml", "hello.ipynb")


def example(name: str) -> Traversable:
    """One shipped example by file name; a name we do not ship is a clear error, not a path."""
    if name not in NAMES:
        raise LookupError(f"no example named {name!r}; the examples are: {', '.join(NAMES)}")
    return files(__name__) / name


def examples_dir() -> Path:
    """The folder the examples are in, for a pool that lets notebooks be read from it.

    The examples are plain files of an installed package (a wheel is unpacked, never zipped).
    """
    return Path(__file__).resolve().parent
