"""Output paths checked before anything is written: a folder (:func:`folder_problems`) or a file
(:func:`output_file_problems`) must be creatable and writable, and rlhfkit never writes into a folder of someone
else's. Each returns a list of one-line problems naming the key, the value and the fix."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (a real probe: an unnamed temporary file, gone at once)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _creatable_problems(path: Path, key: str, what: str) -> list[str]:
    base = _nearest_existing(path if path.is_dir() else path.parent)  # an existing file is replaced in its folder
    if not base.is_dir():
        return [
            f"{key}={str(path)!r}: {str(base)!r} is a file, so {what} cannot be created there; choose another path"
        ]
    if not _writable(base):
        return [
            f"{key}={str(path)!r}: {str(base)!r} is not writable; choose a writable location or fix its permissions"
        ]
    return []


def output_file_problems(path: str | os.PathLike, key: str = "--out") -> list[str]:
    """Problems of an output file: not a folder, and its folder creatable and writable (an existing file is
    replaced atomically)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return [f"{key} {str(path)!r} is a folder; give a file name (rlhfkit will not replace a folder)"]
    if path.is_file() and not os.access(path, os.W_OK):
        return [f"{key} {str(path)!r} is not writable; choose another file or fix its permissions"]
    return [p.replace(f"{key}=", f"{key} ", 1) for p in _creatable_problems(path, key, "the file")]


def folder_problems(
    path: str | os.PathLike, key: str = "output_dir", owned: Callable[[str], bool] | None = None
) -> list[str]:
    """Problems of an output folder: not a file, creatable and writable; with ``owned`` (a name -> whether rlhfkit
    writes it there), an existing folder must hold only such names (rlhfkit never writes into, or deletes, a folder
    of someone else's)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        return [f"{key}={str(path)!r} is a file; give a folder path (rlhfkit will not overwrite the file)"]
    problems = _creatable_problems(path, key, "the folder")
    if not path.exists() or owned is None:
        return problems
    foreign = sorted(p.name for p in path.iterdir() if not owned(p.name))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        problems.append(
            f"{key}={str(path)!r} holds files that are not an rlhfkit run's ({shown}); choose a new or empty folder "
            "(rlhfkit never writes into a folder it did not create)"
        )
    return problems
