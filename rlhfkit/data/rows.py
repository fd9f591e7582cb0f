"""Reading preference sources row by row: files, ``datasets.Dataset`` objects and lists of dicts, the report of what a
conversion read and made, and the checks every text value goes through.

Sources: a path to ``.jsonl`` / ``.jsonl.gz`` / ``.json`` (a list of objects) / ``.parquet`` / ``.csv``, a
``datasets.Dataset``, or a list of dicts. In CSV, list-valued cells (votes, responses, rankings, messages) are
JSON strings.

Text values as they come
------------------------
A text field is a string or a list of ``{"role", "content"}`` chat messages. A number or a boolean becomes its text
as JSON writes it (``3``, ``2.5``, ``true``), and an empty response (``""``: a model that said nothing, which
labelers judged) is a legitimate, usually bad, answer: both are kept and counted in ``report.notes``. An empty
*prompt* is an error, and so is a null value (``None``) or a missing column anywhere.

Bad rows
--------
A malformed row (missing column, null text, chosen identical to rejected, wrong type, unparseable transcript,
invalid JSON, a vote label outside the label map) raises :class:`~rlhfkit.core.errors.DataError` with one line naming
the source, the 1-based row number (for JSONL: the line number), the problem and the fix. With ``on_bad_row="skip"``
such rows are skipped and counted by reason in ``report.skipped``. A source that yields no pair at all always
raises.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import DataError
from rlhfkit.core.io import atomic_path

ON_BAD_ROW = ("error", "skip")
_MAX_EXAMPLES = 5  # skipped-row messages kept in the report
# Notes counted in ``report.notes`` for values kept as they came.
EMPTY_RESPONSE = "empty response"
NUMBER_AS_TEXT = "number or boolean read as text"


# ----------------------------------------------------------------------------- results
@dataclass
class DataReport:
    """What a conversion read, made and skipped.

    skipped: bad rows skipped, by reason. dropped_pairs: candidate pairs not made, by reason (ties in a ranking,
    identical responses). dropped_rows: valid rows that gave no pair, by reason (votes: no votes, identical
    responses, ties, low agreement; scores: no response far enough below the best). notes: values kept as they came,
    by kind (:data:`EMPTY_RESPONSE`, :data:`NUMBER_AS_TEXT`). examples: the first few skipped-row messages.
    """

    source: str
    format: str
    rows: int = 0
    pairs: int = 0
    skipped: Counter = field(default_factory=Counter)
    dropped_pairs: Counter = field(default_factory=Counter)
    dropped_rows: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``source (format): N rows -> M pairs; skipped ...; dropped ...``."""
        text = f"{self.source} ({self.format}): {self.rows} rows -> {self.pairs} pairs"
        for label, counts in (("skipped rows", self.skipped), ("rows without pairs", self.dropped_rows)):
            if counts:
                text += f"; {label}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())
        if self.dropped_pairs:
            text += "; pairs dropped: " + ", ".join(f"{k} {v}" for k, v in self.dropped_pairs.most_common())
        if self.notes:
            text += "; kept as they came: " + ", ".join(f"{k} {v}" for k, v in self.notes.most_common())
        return text

    def to_dict(self) -> dict:
        """The report as JSON-ready values."""
        return {
            "source": self.source,
            "format": self.format,
            "rows": self.rows,
            "pairs": self.pairs,
            "skipped": dict(self.skipped),
            "dropped_pairs": dict(self.dropped_pairs),
            "dropped_rows": dict(self.dropped_rows),
            "notes": dict(self.notes),
            "examples": list(self.examples),
        }


@dataclass
class PreferenceData:
    """Pairs in TRL's explicit-prompt preference format, with the report of how they were made.

    ``agreement`` holds the :class:`rlhfkit.data.agreement.FilterResult` for the ``votes`` format, else None.
    """

    pairs: list[dict]
    report: DataReport
    agreement: Any = None

    def __len__(self) -> int:
        return len(self.pairs)

    def to_dataset(self):
        """The pairs as a ``datasets.Dataset``."""
        from datasets import Dataset

        return Dataset.from_list(self.pairs)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the pairs to ``path`` atomically (see :func:`write_pairs`)."""
        return write_pairs(self.pairs, path)


def write_pairs(pairs: list[dict], path: str | os.PathLike) -> Path:
    """Write rows atomically as ``.jsonl``, ``.jsonl.gz``, ``.json`` or ``.parquet`` (chosen by the extension)."""
    path = Path(path)
    kind = _kind(path)
    if kind == "csv":
        raise DataError(f"{path}: writing CSV would flatten conversational pairs; use .jsonl, .jsonl.gz or .parquet")
    with atomic_path(path) as tmp:
        if kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(pairs), tmp)
        elif kind == "json":
            tmp.write_text(json.dumps(pairs, ensure_ascii=False) + "\n", encoding="utf-8")
        else:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(tmp, "wt", encoding="utf-8") as f:
                for row in pairs:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# ----------------------------------------------------------------------------- reading
class BadRow(Exception):
    """A row-level problem: ``kind`` (counted when skipping), ``problem`` and ``fix`` (the one-line message)."""

    def __init__(self, kind: str, problem: str, fix: str = ""):
        super().__init__(problem)
        self.kind, self.problem, self.fix = kind, problem, fix


def _kind(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in ((".jsonl", "jsonl"), (".jsonl.gz", "jsonl"), (".ndjson", "jsonl"), (".json", "json")):
        if name.endswith(suffix):
            return kind
    for suffix, kind in ((".parquet", "parquet"), (".csv", "csv"), (".csv.gz", "csv")):
        if name.endswith(suffix):
            return kind
    raise DataError(f"{path}: unknown file type; use .jsonl, .jsonl.gz, .json, .parquet or .csv")


def read_rows(source: Any) -> tuple[str, Iterator[tuple[int, Any]], list[str] | None, bool]:
    """Open a source: returns ``(name, rows, columns, from_csv)``.

    ``rows`` yields ``(row_number, record)`` with 1-based row numbers (JSONL: line numbers); a JSONL line that is
    not valid JSON yields a ``BadRow`` in place of the record. ``columns`` is the column list for tabular sources
    (Parquet, CSV, Dataset) and None where rows may differ.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found; check the path (a relative path starts where you run from)")
        kind = _kind(path)
        name = str(path)
        if kind == "jsonl":
            return name, _jsonl_rows(path), None, False
        if kind == "json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(
                    f"{path}: not valid JSON ({e}); a file with one object per line must be named .jsonl"
                ) from None
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of row objects, got {type(data).__name__}")
            return name, enumerate(data, start=1), None, False
        if kind == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return name, enumerate(table.to_pylist(), start=1), table.column_names, False
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
        return name, enumerate(rows, start=1), columns, True
    if isinstance(source, list):
        return "rows", enumerate(source, start=1), None, False
    from datasets import Dataset, DatasetDict

    if isinstance(source, DatasetDict):
        raise DataError(f"got a DatasetDict with splits {list(source)}; pass one split, e.g. dataset['train']")
    if isinstance(source, Dataset):
        return "dataset", enumerate(source.to_list(), start=1), list(source.column_names), False
    raise DataError(f"cannot read {type(source).__name__}; pass a file path, a datasets.Dataset or a list of dicts")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                yield line_no, BadRow("invalid JSON", f"invalid JSON ({e.msg} at column {e.colno})", "fix the line")


def name_it(arg: str) -> str:
    return f"name the column with {arg}=... (CLI: --{arg.replace('_', '-')})"


def convert(
    source: Any,
    fmt: str,
    required: dict[str, str],
    row_fn: Callable[[dict, int, bool, Counter], Iterable[dict]],
    on_bad_row: str,
    report: DataReport | None = None,
) -> PreferenceData:
    """Run ``row_fn(record, row_no, from_csv, notes)`` over every row; ``required`` maps each column name to the
    argument that names it. ``notes`` (a Counter) collects the row's values kept as they came; they are added to
    ``report.notes`` when the row is good."""
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row={on_bad_row!r}; choose 'error' (stop at the first bad row) or 'skip'")
    name, rows, columns, from_csv = read_rows(source)
    if columns is not None:
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(
                f"{name}: missing column {missing[0]!r} (columns present: {', '.join(columns)}); "
                + name_it(required[missing[0]])
            )
    report = report or DataReport(source=name, format=fmt)
    report.source = name
    pairs: list[dict] = []
    for row_no, record in rows:
        report.rows += 1
        try:
            if isinstance(record, BadRow):
                raise record
            if not isinstance(record, dict):
                raise BadRow("wrong type", f"expected an object with columns, got {type(record).__name__}")
            for col, arg in required.items():
                if col not in record:
                    present = ", ".join(map(str, record)) or "none"
                    raise BadRow(
                        "missing column", f"missing column {col!r} (columns present: {present})", name_it(arg)
                    )
            notes: Counter = Counter()
            pairs.extend(row_fn(record, row_no, from_csv, notes))
            report.notes.update(notes)
        except BadRow as bad:
            message = f"{name}: row {row_no}: {bad.problem}" + (f"; {bad.fix}" if bad.fix else "")
            if on_bad_row == "error":
                raise DataError(message) from None
            report.skipped[bad.kind] += 1
            if len(report.examples) < _MAX_EXAMPLES:
                report.examples.append(message)
    report.pairs = len(pairs)
    if not pairs:
        first = f"; first: {report.examples[0]}" if report.examples else ""
        raise DataError(f"no preference pairs: {report.summary()}{first}; check the format and column names")
    return PreferenceData(pairs=pairs, report=report)


# ----------------------------------------------------------------------------- field validation
def decode(value: Any, from_csv: bool) -> Any:
    """CSV cells holding lists/objects are JSON strings."""
    if from_csv and isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def is_null(value: Any) -> bool:
    """None, or a float NaN (how pandas-made tables spell a missing value)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def text(
    record: dict, col: str, from_csv: bool = False, notes: Counter | None = None, response: bool = False
) -> str | list[dict]:
    """A text field of ``record`` (see :func:`check_text`)."""
    return check_text(decode(record[col], from_csv), f"column {col!r}", notes, response)


def check_text(value: Any, where: str, notes: Counter | None = None, response: bool = False) -> str | list[dict]:
    """A string or a non-empty list of ``{"role", "content"}`` messages, as the module doc says.

    Numbers and booleans become their JSON text, and with ``response`` an empty string (or messages with only empty
    contents) is kept; both are counted in ``notes``. Null, an empty prompt and other types raise :class:`BadRow`.
    """
    if is_null(value):
        raise BadRow("empty text", f"{where} is null", "remove the row or fill in the text")
    if isinstance(value, bool | int | float):
        if notes is not None:
            notes[NUMBER_AS_TEXT] += 1
        return json.dumps(value)
    if isinstance(value, str):
        if not value.strip():
            if not response:
                raise BadRow("empty text", f"{where} is empty", "remove the row or fill in the text")
            if notes is not None:
                notes[EMPTY_RESPONSE] += 1
        return value
    if isinstance(value, list) and value:
        for m in value:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise BadRow(
                    "wrong type",
                    f"{where} is a list but not of {{'role': str, 'content': str}} messages: {str(m)[:60]!r}",
                    "give a string or a list of chat messages",
                )
        if not any(m["content"].strip() for m in value):
            if not response:
                raise BadRow("empty text", f"{where} has only empty messages", "remove the row or fill in the text")
            if notes is not None:
                notes[EMPTY_RESPONSE] += 1
        return [{"role": m["role"], "content": m["content"]} for m in value]
    shown = "an empty list" if value == [] else f"{type(value).__name__} {str(value)[:40]!r}"
    raise BadRow("wrong type", f"{where} is {shown}; expected a string or a list of chat messages")


def same_kind(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` unchanged if its values are all strings or all message lists; else :class:`BadRow`."""
    kinds = {k: isinstance(v, list) for k, v in row.items()}
    if len(set(kinds.values())) > 1:
        detail = ", ".join(f"{k}: {'messages' if c else 'string'}" for k, c in kinds.items())
        raise BadRow(
            "wrong type", f"mixes strings and chat messages ({detail})", "use strings or messages for all fields"
        )
    return row


def distinct(chosen: Any, rejected: Any) -> None:
    """:class:`BadRow` when a pair's two sides are identical (it holds no preference)."""
    if chosen == rejected:
        raise BadRow(
            "identical chosen and rejected", "chosen is identical to rejected", "drop the row: it has no preference"
        )
