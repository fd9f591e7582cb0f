"""Comparisons files: K responses per prompt, waiting to be compared (by people, the lab's labelers or a judge).

One JSON object per line (``comparisons.jsonl``), written by ``rlhfkit sample`` and read by ``rlhfkit label``, the
judge, the lab's :class:`~rlhfkit.lab.LabelerPool` and the pipeline:

``item_id``
    stable id of the item: :func:`item_id` of the prompt and the responses (so the same answers get the same id on
    every machine, and a re-sampled item with other answers gets another).
``prompt``
    text, or chat messages (a list of ``{"role", "content"}``).
``responses``
    the K >= 2 distinct responses (text), in sampling order.
``model``
    what produced them (a folder, hub id or ``run:<dir>:<stage>``); optional for files made elsewhere.
``sampling``
    the sampling settings (``temperature``, ``top_p``, ``max_new_tokens``, ``seed``, ``k`` asked for, ``duplicates``
    dropped); optional.

Any other key is kept as it is (e.g. the lab's ``gold``). :func:`read_comparisons` refuses a bad file with one line
naming the row; :class:`AppendLog` is the append-only, fsynced, locked writer both this file and the votes file
(:mod:`rlhfkit.data.votelog`) use, so a killed writer loses nothing it acknowledged and writes nothing twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import DataError

REQUIRED = ("item_id", "prompt", "responses")


def item_id(prompt: Any, responses: Iterable[str]) -> str:
    """A stable id of a prompt and its responses: 16 hex digits of the SHA-256 of their canonical JSON."""
    canon = json.dumps([prompt, list(responses)], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


def comparison_row(prompt: Any, responses: list[str], model: str | None = None, **extra: Any) -> dict[str, Any]:
    """One comparisons row, its ``item_id`` computed from the prompt and the responses."""
    row: dict[str, Any] = {"item_id": item_id(prompt, responses), "prompt": prompt, "responses": list(responses)}
    if model is not None:
        row["model"] = model
    row.update(extra)
    return row


def _is_prompt(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )


def comparison_problem(row: Any) -> str | None:
    """What is wrong with one comparisons row (None when it is valid)."""
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, not a JSON object"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return f"has no {', '.join(repr(k) for k in missing)} (a comparisons row has {', '.join(REQUIRED)})"
    if not isinstance(row["item_id"], str) or not row["item_id"]:
        return f"item_id={row['item_id']!r} must be a non-empty string"
    if not _is_prompt(row["prompt"]):
        return "prompt must be non-empty text or a list of chat messages ({role, content})"
    responses = row["responses"]
    if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
        return "responses must be a list of at least 2 texts"
    if len(set(responses)) != len(responses):
        return "responses holds the same text twice; each response of an item must differ"
    return None


def read_comparisons(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a comparisons file, checked; a bad file raises :class:`DataError` naming the file and row.

    An unfinished last line (a writer killed mid-line) is ignored. Two rows with one ``item_id`` are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"comparisons file {str(path)!r} does not exist; write one with `rlhfkit sample`")
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for line_no, row in iter_lines(path):
        if isinstance(row, Exception):
            raise DataError(f"{path}: row {line_no} is not JSON ({row}); one JSON object per line")
        problem = comparison_problem(row)
        if problem:
            raise DataError(f"{path}: row {line_no} {problem}")
        if row["item_id"] in seen:
            raise DataError(
                f"{path}: row {line_no} repeats item_id {row['item_id']!r} of row {seen[row['item_id']]}; "
                "each item once"
            )
        seen[row["item_id"]] = line_no
        rows.append(row)
    if not rows:
        raise DataError(f"comparisons file {str(path)!r} has no rows; write one with `rlhfkit sample`")
    return rows


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON or the parse error)`` of every complete, non-empty line of a JSONL file.

    A last line without its newline is an unfinished write (the writer was killed) and is skipped.
    """
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                return
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, e


class AppendLog:
    """An append-only JSONL file with one writer at a time: each row is a complete line, flushed and fsynced before
    :meth:`append` returns (so a returned append survives a SIGKILL or power loss).

    Threads share a lock; processes an exclusive ``flock`` on the file. When opened, an unfinished last line (a
    writer killed mid-write, never acknowledged) is cut off, so the next row starts on a line of its own.
    ``exclusive``: the ``flock`` is held from opening to :meth:`close`, for a writer that reads the file and then
    appends what it lacks (``rlhfkit sample``); another process opening it so meanwhile gets a :class:`DataError`.
    """

    def __init__(self, path: str | os.PathLike, *, exclusive: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._exclusive = False
        self._file = open(self.path, "a+b")  # noqa: SIM115 -- held open for the log's lifetime; closed by close()
        if exclusive:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.close()
                raise DataError(
                    f"{self.path} is being written by another process; wait for it to finish or write another file"
                ) from None
            self._exclusive = True
        with self._locked():
            self._trim_partial_line()

    def _locked(self):
        log = self

        class _Held:
            def __enter__(self):
                log._lock.acquire()
                if not log._exclusive:  # an exclusive log holds the flock already
                    fcntl.flock(log._file.fileno(), fcntl.LOCK_EX)

            def __exit__(self, *exc):
                if not log._exclusive:
                    fcntl.flock(log._file.fileno(), fcntl.LOCK_UN)
                log._lock.release()

        return _Held()

    def _trim_partial_line(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        if size == 0:
            return
        self._file.seek(0)
        data = self._file.read()
        end = data.rfind(b"\n") + 1
        if end != size:
            self._file.truncate(end)
            self._file.flush()
            os.fsync(self._file.fileno())

    def append(self, *rows: dict[str, Any]) -> None:
        """Write ``rows`` (each one line), then flush and fsync; all or none are visible to a reader after a crash
        mid-call except for a cut last line, which readers skip."""
        payload = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)
        with self._locked():
            self._file.seek(0, os.SEEK_END)
            self._file.write(payload)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
