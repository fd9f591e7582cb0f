"""The run manifest: which pipeline stage finished, with which config, producing what.

``<output_dir>/manifest.json`` holds one entry per stage::

    {"status": "done" | "running" | "failed" | "stopped", "config_hash": "...", "outputs": {...},
     "metrics": {...}, "started": "...", "finished": "..."}

It is rewritten atomically after every change, so a killed run leaves a readable manifest whose
interrupted stage says ``running``: rerunning the same command resumes that stage and skips the
finished ones.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from rlhfkit.io import write_json

MANIFEST = "manifest.json"


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

    def finish(self, name: str, outputs: dict[str, Any], metrics: dict[str, Any], status: str = "done") -> None:
        self.update(name, status=status, outputs=outputs, metrics=metrics, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))

    def invalidate_from(self, names: list[str]) -> None:
        """Forget these stages (``--from STAGE`` redoes a stage and everything after it)."""
        for name in names:
            self.data["stages"].pop(name, None)
        self.save()

    def save(self) -> None:
        if self.writable:
            write_json(self.path, self.data)
