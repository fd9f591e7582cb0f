"""The run manifest: which pipeline stage finished, with which config, producing what.

``<output_dir>/manifest.json`` holds one entry per stage::

    {"status": "done" | "running" | "failed" | "waiting for labels", "config_hash": "...", "outputs": {...},
     "metrics": {...}, "files": {"model/model.safetensors": [size, mtime_ns, sha256 | null], ...},
     "started": "...", "finished": "..."}

It is rewritten atomically after every change, so a killed run leaves a readable manifest whose
interrupted stage says ``running``: rerunning the same command resumes that stage and skips the
finished ones. A stage waiting for people's votes says ``waiting for labels`` (its ``waiting`` entry holds the
``rlhfkit label`` command); it resumes the same way. ``files`` is the :func:`fingerprint` of the stage's folder when
it finished (checkpoints left out): before a finished stage is skipped, :func:`changed_files` says whether what it
wrote is still there, unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from rlhfkit.core.io import write_json

MANIFEST = "manifest.json"
WAITING = "waiting for labels"  # a stage that sampled comparisons and waits for people's votes (it resumes)
HASHED_FILE_BYTES = 64 * 2**20  # files up to this size are also hashed (a copied run folder keeps them verifiable)


def _skipped(rel: Path) -> bool:
    """Checkpoints (removed once a stage finishes, or kept after monitor alerts) and temporary names."""
    return any(
        part.startswith("checkpoint-") or (part.startswith(".") and part.endswith(".tmp")) for part in rel.parts
    )


def folder_fingerprint(folder: str | os.PathLike) -> dict[str, list]:
    """``{relative path: [size, mtime_ns, sha256 or None]}`` of every file in ``folder`` (checkpoints and temporary
    files left out); the sha256 only for files up to :data:`HASHED_FILE_BYTES`."""
    folder = Path(folder)
    out: dict[str, list] = {}
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        rel = path.relative_to(folder)
        if path.is_file() and not _skipped(rel):
            stat = path.stat()
            digest = _sha256(path) if stat.st_size <= HASHED_FILE_BYTES else None
            out[rel.as_posix()] = [stat.st_size, stat.st_mtime_ns, digest]
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def changed_files(folder: str | os.PathLike, recorded: dict[str, list]) -> list[str]:
    """The files of a recorded :func:`fingerprint` that are missing or changed in ``folder`` ("path (missing)",
    "path (changed)"); files added since are ignored. A file is unchanged when its size matches and its mtime or,
    where it was hashed, its content does."""
    folder = Path(folder)
    out = []
    for rel, (size, mtime, digest) in recorded.items():
        path = folder / rel
        if not path.is_file():
            out.append(f"{rel} (missing)")
            continue
        stat = path.stat()
        same = stat.st_size == size and (stat.st_mtime_ns == mtime or (digest is not None and _sha256(path) == digest))
        if not same:
            out.append(f"{rel} (changed)")
    return out


def config_hash(obj: Any) -> str:
    """A stable short hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


class Manifest:
    """Read/update ``manifest.json`` in a run folder."""

    def __init__(self, output_dir: str | Path, writable: bool = True):
        self.path = Path(output_dir) / MANIFEST
        self.writable = writable  # False on the non-main processes of a distributed run: they only read it
        self.data: dict[str, Any] = {"stages": {}}
        self.reload()

    def reload(self) -> None:
        """Read the manifest from disk again (a non-main process, after the main one recorded a stage)."""
        if self.path.exists():
            self.data = json.loads(self.path.read_text())

    def stage(self, name: str) -> dict[str, Any]:
        return self.data["stages"].get(name, {})

    def waiting(self) -> tuple[str, dict[str, Any]] | None:
        """``(stage, entry)`` of the stage that waits for people's votes (status :data:`WAITING`), or None."""
        return next(((n, e) for n, e in self.data["stages"].items() if e.get("status") == WAITING), None)

    def update(self, name: str, **fields: Any) -> None:
        entry = self.data["stages"].setdefault(name, {})
        entry.update(fields)
        self.save()

    def start(self, name: str, config: dict[str, Any], digest: str) -> None:
        self.data["stages"][name] = {
            "status": "running",
            "config_hash": digest,
            "config": config,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self.save()

    def finish(
        self,
        name: str,
        outputs: dict[str, Any],
        metrics: dict[str, Any],
        status: str = "done",
        files: dict[str, list] | None = None,
        folder: str | os.PathLike | None = None,
    ) -> None:
        """Record a finished stage: its outputs, metrics, and the :func:`fingerprint` of its folder (``files``) with
        the folder's path (``folder``: where a run that shares the stage verifies it)."""
        finished = time.strftime("%Y-%m-%dT%H:%M:%S")
        where = {} if folder is None else {"folder": str(folder)}
        self.update(
            name, status=status, outputs=outputs, metrics=metrics, files=files or {}, **where, finished=finished
        )

    def invalidate_from(self, names: list[str]) -> None:
        """Forget these stages (``--from STAGE`` redoes a stage and everything after it)."""
        for name in names:
            self.data["stages"].pop(name, None)
        self.save()

    def save(self) -> None:
        if self.writable:
            write_json(self.path, self.data)
