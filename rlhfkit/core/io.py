"""Atomic file and folder writes, so that nothing half-written is ever left in an output folder, and the one
JSON-safe conversion and figure writer every report uses.

A file is written to a temporary name in the same folder and renamed into place (``os.replace`` is
atomic on POSIX and Windows); a folder is built under a temporary name and renamed when complete.
:func:`json_safe` turns NaN / inf into null and numpy / torch scalars into numbers; :func:`pyplot` gives
matplotlib on the Agg backend (files, no display) and :func:`save_figure` writes a PNG atomically and closes it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    Works for files and folders: write whatever you want at the yielded path. An existing ``path`` is replaced only
    by the same kind (a file by a file, a folder by a folder): a folder is never replaced by a file or a file by a
    folder (:class:`~rlhfkit.core.errors.ConfigError`, the temporary path deleted). A parent folder that cannot be
    created (a file is in the way) is a ``ConfigError`` too.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in path.parents if p.is_file()), path.parent)
        raise ConfigError(f"cannot write {str(path)!r}: {str(blocker)!r} is a file; choose another path") from None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if path.exists() and path.is_dir() != tmp_path.is_dir():
            kind, other = ("a folder", "a file") if path.is_dir() else ("a file", "a folder")
            raise ConfigError(
                f"{str(path)!r} is {kind}; rlhfkit will not replace it with {other}: choose another path"
            )
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically, through :func:`json_safe` (anything else JSON cannot hold is
    written as its ``str``)."""
    return write_text(path, json.dumps(json_safe(obj), indent=indent, default=str) + "\n")


def json_safe(obj: Any) -> Any:
    """``obj`` as strict JSON can hold it: dicts with ``str`` keys, lists (from lists and tuples), and numbers with
    NaN / inf as ``None``; numpy and torch scalars become Python ``bool`` / ``int`` / ``float``. Other values are
    returned as they are (``json.dumps`` decides)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # a numpy or torch scalar
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures are written to files, never shown (imported on first use,
    so that ``rlhfkit --help`` stays fast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG (110 dpi, tight bounding box) atomically, and close it (also on error)."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        pyplot().close(fig)
    return Path(path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
