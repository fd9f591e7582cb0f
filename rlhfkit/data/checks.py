"""A data source checked before a run reads it: it exists, is readable, decodes, holds rows (objects) and has the
columns its stage needs -- only its first rows are read (:func:`data_problems`; :func:`preference_problems` for a
preference format and its reader's options; :func:`soft_label_problems` for a reward model trained on soft labels).
Each returns one-line problems naming the key, the value and the fix."""

from __future__ import annotations

import csv
import gzip
import inspect
import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import DataError
from rlhfkit.core.rules import unknown_keys
from rlhfkit.data import FORMATS, detect_format
from rlhfkit.data.preferences import P_COLUMNS
from rlhfkit.data.tables import LAB
from rlhfkit.data.votelog import is_vote_log

PEEK_ROWS = 5  # rows read from a data source to check that it decodes and has its columns


DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv")


# Columns each pipeline stage needs (any one of the alternatives).
SFT_COLUMNS = (("prompt", "completion"), ("messages",), ("text",))


PROMPT_COLUMNS = (("prompt",),)


# ----------------------------------------------------------------------------------------------- data
class _Problem(Exception):
    """A data source cannot be read: the message says why and what to do (without the key and value)."""


def _is_gz(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _data_suffix(path: Path) -> str | None:
    return next((s for s in path.suffixes if s.lower() in DATA_SUFFIXES), None)


def _peek_lines(path: Path) -> list[Any]:
    opener = gzip.open if _is_gz(path) else open
    rows: list[Any] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise _Problem(
                    f"line {line_no} is not valid JSON ({e.msg}, column {e.colno}); fix or remove it"
                ) from None
            if len(rows) >= PEEK_ROWS:
                break
    return rows


def _peek_json(path: Path) -> list[Any]:
    opener = gzip.open if _is_gz(path) else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Problem(
            f"is not valid JSON ({e.msg} at line {e.lineno}); a file with one object per line must be named .jsonl"
        ) from None
    if not isinstance(data, list):
        raise _Problem(f"holds a JSON {type(data).__name__}, not a list of row objects; write [{{...}}, {{...}}]")
    return data[:PEEK_ROWS]


def _peek_csv(path: Path) -> list[Any]:
    opener = gzip.open if _is_gz(path) else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        return [row for _, row in zip(range(PEEK_ROWS), reader)]


def _peek_parquet(path: Path) -> list[Any]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        batch = next(table.iter_batches(batch_size=PEEK_ROWS), None)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError subclasses for a file that is not Parquet
        raise _Problem(
            f"is not a readable Parquet file ({str(e).splitlines()[0]}); write it again, e.g. with "
            "pandas.DataFrame.to_parquet"
        ) from None
    return [] if batch is None else batch.to_pylist()


def peek_file(path: str | os.PathLike) -> list[Any]:
    """The first :data:`PEEK_ROWS` rows of a data file (.jsonl[.gz], .json, .parquet, .csv[.gz]); raises
    :class:`_Problem` when it does not decode."""
    path = Path(path)
    suffix = (_data_suffix(path) or "").lower()
    reader = {".jsonl": _peek_lines, ".ndjson": _peek_lines, ".json": _peek_json, ".csv": _peek_csv}
    try:
        return _peek_parquet(path) if suffix == ".parquet" else reader[suffix](path)
    except UnicodeDecodeError as e:
        raise _Problem(f"is not UTF-8 text (byte {e.object[e.start : e.start + 1]!r}); save it as UTF-8") from None
    except (gzip.BadGzipFile, zlib.error):
        raise _Problem("is not gzip-compressed although its name ends in .gz; rename it or gzip it") from None
    except EOFError:
        raise _Problem("is a truncated gzip file (it ends early); write it again") from None
    except PermissionError:
        raise _Problem("cannot be read (permission denied); check its permissions") from None
    except csv.Error as e:
        raise _Problem(f"is not valid CSV ({e}); fix the file") from None


def _peek_folder(folder: Path, split: str) -> tuple[list[Any], str]:
    """First rows of a dataset folder's ``split`` (files named after splits, or all files = train)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _data_suffix(p) and not p.name.startswith("."))
    if not files:
        raise _Problem(
            f"is a folder without data files ({', '.join(DATA_SUFFIXES)}); give a data file or a dataset folder"
        )
    named = [p for p in files if split in p.relative_to(folder).as_posix()]
    if not named and any(s in p.name for p in files for s in ("train", "test", "validation")):
        raise _Problem(f"has no files for split {split!r}; set data.split to one of its splits")
    if not named and split != "train":
        raise _Problem("has only a 'train' split (its file names name no split); set the split to 'train'")
    first = (named or files)[0]
    return peek_file(first), str(first)


def _peek_hub(name: str, split: str) -> list[Any]:
    import datasets

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or datasets.config.HF_HUB_OFFLINE
    try:
        if offline:  # only the local cache: load it (memory-mapped), take the first rows
            table = datasets.load_dataset(name, split=split)
            return table.select(range(min(PEEK_ROWS, len(table)))).to_list()
        stream = datasets.load_dataset(name, split=split, streaming=True)
        return [row for _, row in zip(range(PEEK_ROWS), stream)]
    except Exception as e:  # no such dataset / split, no network, not cached: datasets raises many kinds
        where = " (offline: only the local cache is searched)" if offline else ""
        raise _Problem(
            f"split {split!r} cannot be opened{where}: {str(e).splitlines()[0][:200]}; give a data file, a dataset "
            "folder or a hub dataset id and one of its splits"
        ) from None


def read_first_rows(source: str, split: str = "train") -> tuple[list[Any], str]:
    """``(rows, name)``: the first rows of a data file, dataset folder or hub dataset, and the file they came from."""
    path = Path(source).expanduser()
    if _data_suffix(path) is not None or path.is_file():
        if path.is_dir():
            raise _Problem("is a folder, but its name says a data file; give the file")
        if not path.exists():
            raise _Problem("not found; check the path (relative paths start where rlhfkit runs)")
        if _data_suffix(path) is None:
            raise _Problem(f"is not a data file rlhfkit reads; use {', '.join(DATA_SUFFIXES)} (optionally .gz)")
        return peek_file(path), str(path)
    if path.is_dir():
        return _peek_folder(path, split)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise _Problem("not found; check the path (relative paths start where rlhfkit runs)")
    return _peek_hub(source, split), source


def _first_rows(source: str, key: str, what: str, split: str) -> tuple[list[dict], list[str]]:
    """``(rows, problems)``: the first rows of a data source, or the one problem that stops reading them."""
    try:
        rows, _ = read_first_rows(source, split)
    except _Problem as p:
        return [], [f"{key}={source!r} {p}"]
    if not rows:
        return [], [f"{key}={source!r} has no rows; give a file with data ({what} needs rows)"]
    bad = next((i for i, row in enumerate(rows, start=1) if not isinstance(row, dict)), None)
    if bad is not None:
        kind = type(rows[bad - 1]).__name__
        return [], [f"{key}={source!r}: row {bad} is a {kind}, not an object with columns; write one object per row"]
    return rows, []


def data_problems(
    source: str, key: str, columns: Sequence[Sequence[str]], what: str, split: str = "train"
) -> list[str]:
    """Problems of a data source (``lab`` has none): it must exist, be readable, decode, hold rows (objects) and
    have one of ``columns``' alternatives (none: any columns). Only the first rows are read. ``what`` names the stage
    that needs them."""
    if source == LAB:
        return []
    rows, problems = _first_rows(source, key, what, split)
    if problems:
        return problems
    present = sorted({c for row in rows for c in row})
    if columns and not any(set(alt) <= set(present) for alt in columns):
        need = " or ".join("+".join(alt) for alt in columns)
        return [f"{key}={source!r} has columns {present}; {what} needs {need}: rename the columns or convert the file"]
    return []


def format_columns(fmt: str, options: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The columns a preference format reads: its converter's ``*_col`` arguments (``options`` over their defaults)
    and the ``*_cols`` ones given in ``options`` (per-labeler columns, which replace the votes list column)."""
    options = options or {}
    columns: list[str] = []
    for p in inspect.signature(FORMATS[fmt]).parameters.values():
        value = options.get(p.name, p.default)
        if p.name == "votes_col" and options.get("labeler_cols"):
            continue  # rlhfkit.data.votes: with labeler_cols the votes column is not read
        if p.name.endswith("_col") and isinstance(value, str):
            columns.append(value)
        elif p.name.endswith("_cols") and value:
            columns += [c.strip() for c in value.split(",")] if isinstance(value, str) else list(value)
    return tuple(columns)


def preference_problems(
    source: str, key: str, fmt: str, split: str = "train", options: dict[str, Any] | None = None, options_key: str = ""
) -> list[str]:
    """:func:`data_problems` for preference data in format ``fmt`` read with ``options`` (the reader's keywords);
    with ``auto`` the format must be detectable from the columns (:func:`rlhfkit.data.detect_format`), and every
    option must be one the format's reader takes (``options_key`` names them in messages)."""
    if source == LAB or (fmt != "auto" and fmt not in FORMATS):
        return []  # an unknown format is reported by the config's own checks
    rows, problems = _first_rows(source, key, "the preferences stage", split)
    if problems:
        return problems
    if fmt == "auto":
        try:
            fmt = detect_format(rows)
        except DataError as e:
            return [f"{key}={source!r}: {e.problems[0].removeprefix('rows: ')}"]
    takes = [p for p in inspect.signature(FORMATS[fmt]).parameters if p != "source"]
    unknown = unknown_keys(options or {}, takes, "", f"the {fmt} reader takes {takes}", "option(s)")
    if unknown:
        return [f"{options_key or key}: {unknown[0]}"]
    present = {c for row in rows for c in row}
    if fmt == "votes" and is_vote_log(present):
        return []  # a votes file, one row per vote: rlhfkit.data.votelog checks each row as it reads it
    missing = [c for c in format_columns(fmt, options) if c not in present]
    if missing:
        return [
            f"{key}={source!r} has columns {sorted(present)}, not {'+'.join(missing)} that preference format {fmt!r} "
            "reads; rename the columns or name them in the format's options (*_col)"
        ]
    return []


def soft_label_problems(
    source: str, key: str, fmt: str, split: str = "train", options: dict[str, Any] | None = None
) -> list[str]:
    """Problems of preference data for a reward model trained on soft labels: the pairs must carry the probability
    that chosen is better: the ``columns`` format reads it (a ``p`` / ``probability`` column, or the one its ``p_col``
    option names, in the first rows), and a votes file gives it where a judge voted (its rows' ``p``). A source that
    cannot be read is left to :func:`preference_problems`."""
    fix = (
        "give a judge's votes file (rlhfkit label --judge) or pairs in the columns format with a 'p' column, or set "
        "reward.soft_labels: false"
    )
    if source == LAB:
        return [f"reward.soft_labels=true, but {key}=lab gives hard labels (no probability 'p'); {fix}"]
    try:
        rows, _ = read_first_rows(source, split)
        fmt = detect_format(rows) if fmt == "auto" else fmt
    except (_Problem, DataError):
        return []
    if fmt == "votes" and is_vote_log({c for row in rows if isinstance(row, dict) for c in row}):
        if any(isinstance(row, dict) and row.get("p") is not None for row in rows):
            return []
        return [f"reward.soft_labels=true, but the votes in {key}={source!r} carry no judge probability 'p'; {fix}"]
    if fmt != "columns":
        return [f"reward.soft_labels=true, but {key}={source!r} is read as format {fmt!r}, which has no 'p'; {fix}"]
    named = (options or {}).get("p_col")
    wanted = (named,) if isinstance(named, str) else P_COLUMNS
    if not any(c in row for row in rows if isinstance(row, dict) for c in wanted):
        return [f"reward.soft_labels=true, but {key}={source!r} has no {' or '.join(map(repr, wanted))} column; {fix}"]
    return []
