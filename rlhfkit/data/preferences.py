"""Preference data: read the common formats and normalise them into TRL's explicit-prompt preference format.

Every converter returns :class:`PreferenceData`: a list of pairs ``{"prompt", "chosen", "rejected", ...}`` that
``RewardTrainer`` / ``DPOTrainer`` accept as they are (string or conversational: lists of ``{"role", "content"}``
messages), and a :class:`DataReport` with counts of rows read, pairs made and rows skipped by reason.

Formats
-------
``hh`` (:func:`from_hh`)
    Anthropic HH-RLHF transcripts: ``chosen`` and ``rejected`` are whole dialogues of ``"\\n\\nHuman: ..."`` and
    ``"\\n\\nAssistant: ..."`` turns. The prompt is the longest shared prefix of turns, cut back so that it ends
    with a Human turn; chosen and rejected are what follows (normally the final Assistant turn). All three become
    messages (``user`` / ``assistant``). An empty final Assistant turn is kept: HH contains a few rows in which
    the labeler preferred the assistant saying nothing.
``columns`` (:func:`from_columns`)
    Explicit ``prompt`` / ``chosen`` / ``rejected`` columns under any names; strings or conversational.
``rankings`` (:func:`from_rankings`)
    One prompt with K responses and either a ``ranking`` (``ranking[i]`` is the rank of ``responses[i]``,
    lower is better, 0 = best; equal ranks are ties) or ``scores`` (higher is better). Each row becomes all
    C(K, 2) ordered pairs minus the tied ones (counted in ``report.dropped_pairs``), as InstructGPT did.
``scores`` (:func:`from_scores`)
    Score-annotated completions (UltraFeedback style); pairs are made by ``rule`` (see :data:`SCORE_RULES`).
``votes`` (:func:`from_votes`)
    Comparisons ``response_a`` / ``response_b`` with one vote per labeler (1 = a, 0 = b, -1 = not rated):
    chosen/rejected by majority, with an ``agreement`` column; ties and low-agreement items are dropped
    (:mod:`rlhfkit.data.agreement`).

Pairs from ``rankings`` and ``scores`` carry a ``group`` column: an integer shared by all pairs of the same
prompt (numbered in order of first appearance), so a trainer or a train/eval split can keep them together.

Sources: a path to ``.jsonl`` / ``.jsonl.gz`` / ``.json`` (a list of objects) / ``.parquet`` / ``.csv``, a
``datasets.Dataset``, or a list of dicts. In CSV, list-valued cells (votes, responses, rankings, messages) are
JSON strings.

Bad rows
--------
A malformed row (missing column, empty text, chosen identical to rejected, wrong type, unparseable transcript,
invalid JSON) raises :class:`~rlhfkit.errors.DataError` with one line naming the source, the 1-based row number
(for JSONL: the line number), the problem and the fix. With ``on_bad_row="skip"`` such rows are skipped and
counted by reason in ``report.skipped``. A source that yields no pair at all always raises.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from rlhfkit.data.agreement import filter_votes
from rlhfkit.errors import DataError
from rlhfkit.io import atomic_path

ON_BAD_ROW = ("error", "skip")
SCORE_RULES = {
    "best_vs_random": "best response vs one response drawn at random among those scoring at least min_gap lower "
    "(UltraFeedback-binarized style; one pair per prompt)",
    "best_vs_rest": "best response vs every response scoring at least min_gap lower",
    "best_vs_worst": "best response vs the lowest-scoring one, if at least min_gap lower (one pair per prompt)",
}
_ROLES = {"Human": "user", "Assistant": "assistant"}
_MAX_EXAMPLES = 5  # skipped-row messages kept in the report


# ----------------------------------------------------------------------------- results
@dataclass
class DataReport:
    """What a conversion read, made and skipped.

    skipped: bad rows skipped, by reason. dropped_pairs: candidate pairs not made, by reason (ties in a ranking,
    identical responses). dropped_rows: valid rows that gave no pair, by reason (votes: ties / low agreement;
    scores: no response far enough below the best). examples: the first few skipped-row messages.
    """

    source: str
    format: str
    rows: int = 0
    pairs: int = 0
    skipped: Counter = field(default_factory=Counter)
    dropped_pairs: Counter = field(default_factory=Counter)
    dropped_rows: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``source (format): N rows -> M pairs; skipped ...; dropped ...``."""
        text = f"{self.source} ({self.format}): {self.rows} rows -> {self.pairs} pairs"
        for label, counts in (("skipped rows", self.skipped), ("rows without pairs", self.dropped_rows)):
            if counts:
                text += f"; {label}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())
        if self.dropped_pairs:
            text += "; pairs dropped: " + ", ".join(f"{k} {v}" for k, v in self.dropped_pairs.most_common())
        return text


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
class _BadRow(Exception):
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
    not valid JSON yields a ``_BadRow`` in place of the record. ``columns`` is the column list for tabular sources
    (Parquet, CSV, Dataset) and None where rows may differ.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: file not found")
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
                yield line_no, _BadRow("invalid JSON", f"invalid JSON ({e.msg} at column {e.colno})", "fix the line")


def _name_it(arg: str) -> str:
    return f"name the column with {arg}=... (CLI: --{arg.replace('_', '-')})"


def _convert(
    source: Any,
    fmt: str,
    required: dict[str, str],
    row_fn: Callable[[dict, int, bool], Iterable[dict]],
    on_bad_row: str,
    report: DataReport | None = None,
) -> PreferenceData:
    """Run ``row_fn`` over every row; ``required`` maps each column name to the argument that names it."""
    if on_bad_row not in ON_BAD_ROW:
        raise DataError(f"on_bad_row={on_bad_row!r}; choose 'error' (stop at the first bad row) or 'skip'")
    name, rows, columns, from_csv = read_rows(source)
    if columns is not None:
        missing = [c for c in required if c not in columns]
        if missing:
            raise DataError(
                f"{name}: missing column {missing[0]!r} (columns present: {', '.join(columns)}); "
                + _name_it(required[missing[0]])
            )
    report = report or DataReport(source=name, format=fmt)
    report.source = name
    pairs: list[dict] = []
    for row_no, record in rows:
        report.rows += 1
        try:
            if isinstance(record, _BadRow):
                raise record
            if not isinstance(record, dict):
                raise _BadRow("wrong type", f"expected an object with columns, got {type(record).__name__}")
            for col, arg in required.items():
                if col not in record:
                    present = ", ".join(map(str, record)) or "none"
                    raise _BadRow(
                        "missing column", f"missing column {col!r} (columns present: {present})", _name_it(arg)
                    )
            pairs.extend(row_fn(record, row_no, from_csv))
        except _BadRow as bad:
            message = f"{name}: row {row_no}: {bad.problem}" + (f"; {bad.fix}" if bad.fix else "")
            if on_bad_row == "error":
                raise DataError(message) from None
            report.skipped[bad.kind] += 1
            if len(report.examples) < _MAX_EXAMPLES:
                report.examples.append(message)
    report.pairs = len(pairs)
    if not pairs:
        raise DataError(
            f"no preference pairs: {report.summary()}" + (f"; first: {report.examples[0]}" if report.examples else "")
        )
    return PreferenceData(pairs=pairs, report=report)


# ----------------------------------------------------------------------------- field validation
def _decode(value: Any, from_csv: bool) -> Any:
    """CSV cells holding lists/objects are JSON strings."""
    if from_csv and isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _text(record: dict, col: str, from_csv: bool = False) -> str | list[dict]:
    """A text field: a non-empty string or a non-empty list of {"role", "content"} messages."""
    return _check_text(_decode(record[col], from_csv), f"column {col!r}")


def _check_text(value: Any, where: str) -> str | list[dict]:
    if value is None:
        raise _BadRow("empty text", f"{where} is null", "remove the row or fill in the text")
    if isinstance(value, str):
        if not value.strip():
            raise _BadRow("empty text", f"{where} is empty", "remove the row or fill in the text")
        return value
    if isinstance(value, list) and value:
        for m in value:
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise _BadRow(
                    "wrong type",
                    f"{where} is a list but not of {{'role': str, 'content': str}} messages: {str(m)[:60]!r}",
                    "give a string or a list of chat messages",
                )
        if not any(m["content"].strip() for m in value):
            raise _BadRow("empty text", f"{where} has only empty messages", "remove the row or fill in the text")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    shown = "an empty list" if value == [] else f"{type(value).__name__} {str(value)[:40]!r}"
    raise _BadRow("wrong type", f"{where} is {shown}; expected a string or a list of chat messages")


def _same_kind(row: dict[str, Any]) -> dict[str, Any]:
    kinds = {k: isinstance(v, list) for k, v in row.items()}
    if len(set(kinds.values())) > 1:
        detail = ", ".join(f"{k}: {'messages' if c else 'string'}" for k, c in kinds.items())
        raise _BadRow(
            "wrong type", f"mixes strings and chat messages ({detail})", "use strings or messages for all fields"
        )
    return row


def _distinct(chosen: Any, rejected: Any) -> None:
    if chosen == rejected:
        raise _BadRow(
            "identical chosen and rejected", "chosen is identical to rejected", "drop the row: it has no preference"
        )


# ----------------------------------------------------------------------------- hh
def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split an HH-RLHF transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) into user/assistant messages.

    Message contents are stripped of surrounding whitespace. Raises DataError on text that is not a transcript.
    """
    try:
        return _parse_transcript(text, "transcript")
    except _BadRow as bad:
        raise DataError(f"{bad.problem}; {bad.fix}") from None


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_FIX = "HH transcripts start with '\\n\\nHuman:' and alternate '\\n\\nHuman:' / '\\n\\nAssistant:' turns"


def _parse_transcript(text: str, where: str) -> list[dict[str, str]]:
    parts = _HH_TURN.split(text)  # [before, role, text, role, text, ...]
    if parts[0].strip():
        raise _BadRow(
            "unparseable transcript", f"{where} has text before the first Human turn: {parts[0][:40]!r}", _HH_FIX
        )
    messages = [{"role": _ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if not any(m["role"] == "assistant" for m in messages) or messages[0]["role"] != "user":
        raise _BadRow("unparseable transcript", f"{where} has no Human turn followed by an Assistant turn", _HH_FIX)
    return messages


def from_hh(
    source: Any, chosen_col: str = "chosen", rejected_col: str = "rejected", on_bad_row: str = "error"
) -> PreferenceData:
    """HH-RLHF transcripts -> conversational pairs whose prompt is the shared dialogue prefix (see module doc)."""

    def row(record: dict, row_no: int, from_csv: bool) -> list[dict]:
        texts = {}
        for col in (chosen_col, rejected_col):
            value = record[col]
            if not isinstance(value, str):
                raise _BadRow("wrong type", f"column {col!r} is {type(value).__name__}; expected a transcript string")
            if not value.strip():
                raise _BadRow("empty text", f"column {col!r} is empty", "remove the row")
            texts[col] = value
        _distinct(texts[chosen_col], texts[rejected_col])
        chosen = _parse_transcript(texts[chosen_col], f"column {chosen_col!r}")
        rejected = _parse_transcript(texts[rejected_col], f"column {rejected_col!r}")
        k = 0
        while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
            k += 1
        while k > 0 and chosen[k - 1]["role"] != "user":  # the prompt ends with the user's turn
            k -= 1
        c_rest, r_rest = chosen[k:], rejected[k:]
        if k == 0 or not c_rest or not r_rest or c_rest[0]["role"] != "assistant" or r_rest[0]["role"] != "assistant":
            raise _BadRow(
                "unparseable transcript",
                f"chosen and rejected do not share a dialogue prefix ending in a Human turn ({k} shared turns)",
                _HH_FIX,
            )
        _distinct(c_rest, r_rest)
        return [{"prompt": chosen[:k], "chosen": c_rest, "rejected": r_rest}]

    required = {
        chosen_col: "chosen_col",
        rejected_col: "rejected_col",
    }
    return _convert(source, "hh", required, row, on_bad_row)


# ----------------------------------------------------------------------------- columns
def from_columns(
    source: Any,
    prompt_col: str = "prompt",
    chosen_col: str = "chosen",
    rejected_col: str = "rejected",
    on_bad_row: str = "error",
) -> PreferenceData:
    """Explicit prompt/chosen/rejected columns (any names) -> pairs; all strings or all conversational."""
    kind: list[bool] = []  # conversational or not, fixed by the first good row

    def row(record: dict, row_no: int, from_csv: bool) -> list[dict]:
        pair = _same_kind(
            {
                "prompt": _text(record, prompt_col, from_csv),
                "chosen": _text(record, chosen_col, from_csv),
                "rejected": _text(record, rejected_col, from_csv),
            }
        )
        _distinct(pair["chosen"], pair["rejected"])
        conversational = isinstance(pair["prompt"], list)
        if kind and kind[0] != conversational:
            first, this = ("messages", "strings") if kind[0] else ("strings", "messages")
            raise _BadRow("wrong type", f"holds {this} but earlier rows hold {first}", "use one format for every row")
        kind[:] = [conversational]
        return [pair]

    required = {
        prompt_col: "prompt_col",
        chosen_col: "chosen_col",
        rejected_col: "rejected_col",
    }
    return _convert(source, "columns", required, row, on_bad_row)


# ----------------------------------------------------------------------------- rankings and scores
class _Groups:
    """Prompt -> group id, numbered in order of first appearance."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def __call__(self, prompt: str | list) -> int:
        key = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)
        return self.ids.setdefault(key, len(self.ids))


def _responses(record: dict, col: str, from_csv: bool) -> list:
    value = _decode(record[col], from_csv)
    if not isinstance(value, list) or len(value) < 2:
        raise _BadRow("wrong type", f"column {col!r} must be a list of at least 2 responses, got {str(value)[:40]!r}")
    return value


def _numbers(record: dict, col: str, k: int, from_csv: bool, what: str) -> list[float]:
    value = _decode(record[col], from_csv)
    ok = isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value
    )
    if not ok or len(value) != k:
        raise _BadRow("wrong type", f"column {col!r} must be a list of {k} numbers ({what}), got {str(value)[:60]!r}")
    return [float(x) for x in value]


def _ordered_pairs(prompt, responses, utility, group, report) -> list[dict]:
    """All pairs (i < j) with the higher-utility response as chosen; ties and identical texts dropped, counted."""
    pairs = []
    for i, j in combinations(range(len(responses)), 2):
        if utility[i] == utility[j]:
            report.dropped_pairs["tie"] += 1
        elif responses[i] == responses[j]:
            report.dropped_pairs["identical responses"] += 1
        else:
            best, worst = (i, j) if utility[i] > utility[j] else (j, i)
            pairs.append({"prompt": prompt, "chosen": responses[best], "rejected": responses[worst], "group": group})
    return pairs


def from_rankings(
    source: Any,
    prompt_col: str = "prompt",
    responses_col: str = "responses",
    ranking_col: str | None = "ranking",
    scores_col: str | None = None,
    on_bad_row: str = "error",
) -> PreferenceData:
    """K-wise rankings -> all C(K, 2) ordered pairs per prompt, tagged with ``group``; tied pairs dropped.

    Give ``ranking_col`` (``ranking[i]`` = rank of ``responses[i]``, lower is better) or ``scores_col`` (higher is
    better, e.g. a rating per response); setting ``scores_col`` uses scores.
    """
    if scores_col is not None:
        ranking_col = None
    if ranking_col is None and scores_col is None:
        raise DataError("from_rankings needs ranking_col (ranks, lower is better) or scores_col (higher is better)")
    order_col = scores_col or ranking_col
    report = DataReport(source="", format="rankings")
    groups = _Groups()

    def row(record: dict, row_no: int, from_csv: bool) -> list[dict]:
        prompt = _text(record, prompt_col, from_csv)
        responses = [
            _check_text(r, f"response {i} of column {responses_col!r}")
            for i, r in enumerate(_responses(record, responses_col, from_csv))
        ]
        what = "higher is better" if scores_col else "rank of each response, 0 = best"
        values = _numbers(record, order_col, len(responses), from_csv, what)
        utility = values if scores_col else [-v for v in values]
        for r in responses:
            _same_kind({"prompt": prompt, "response": r})
        return _ordered_pairs(prompt, responses, utility, groups(prompt), report)

    required = {
        prompt_col: "prompt_col",
        responses_col: "responses_col",
        order_col: "scores_col" if scores_col else "ranking_col",
    }
    return _convert(source, "rankings", required, row, on_bad_row, report)


def from_scores(
    source: Any,
    prompt_col: str = "prompt",
    responses_col: str = "completions",
    scores_col: str | None = None,
    text_key: str = "response",
    score_key: str = "score",
    rule: str = "best_vs_random",
    min_gap: float = 0.0,
    seed: int = 0,
    on_bad_row: str = "error",
) -> PreferenceData:
    """Score-annotated completions -> pairs by ``rule`` (:data:`SCORE_RULES`), tagged with ``group``.

    ``responses_col`` holds either a list of dicts with ``text_key`` and ``score_key`` (UltraFeedback: prompt
    ``instruction``, completions ``completions``, text ``response``, score ``overall_score``) or, with
    ``scores_col``, a list of strings with a parallel list of scores. The best response is the highest score (the
    first one on ties at the top); a rejected response must score strictly lower and at least ``min_gap`` lower.
    ``best_vs_random`` draws with ``random.Random(f"{seed}:{row}")``, so results do not depend on skipped rows.
    Prompts without any response far enough below the best are counted in ``report.dropped_rows``. Pairs carry
    ``score_chosen`` and ``score_rejected``.
    """
    if rule not in SCORE_RULES:
        raise DataError(f"rule={rule!r} is not a score rule; choose one of {', '.join(SCORE_RULES)}")
    if min_gap < 0:
        raise DataError(f"min_gap={min_gap} must be >= 0 (the smallest score difference that makes a pair)")
    report = DataReport(source="", format="scores")
    groups = _Groups()

    def row(record: dict, row_no: int, from_csv: bool) -> list[dict]:
        prompt = _text(record, prompt_col, from_csv)
        items = _responses(record, responses_col, from_csv)
        if scores_col is not None:
            texts = items
            scores = _numbers(record, scores_col, len(items), from_csv, "one score per response, higher is better")
        else:
            texts, scores = [], []
            for i, item in enumerate(items):
                if not isinstance(item, dict) or text_key not in item or score_key not in item:
                    raise _BadRow(
                        "wrong type",
                        f"completion {i} of column {responses_col!r} is not a dict with keys {text_key!r} and "
                        f"{score_key!r}: {str(item)[:60]!r}",
                        "set text_key/score_key (CLI: --text-key/--score-key) or give scores_col",
                    )
                texts.append(item[text_key])
                scores.append(item[score_key])
            scores = _numbers({"s": scores}, "s", len(items), False, f"{score_key!r} of each completion")
        texts = [_check_text(t, f"response {i} of column {responses_col!r}") for i, t in enumerate(texts)]
        best = int(np.argmax(scores))
        lower = [i for i, s in enumerate(scores) if s < scores[best] and scores[best] - s >= min_gap]
        lower = [i for i in lower if texts[i] != texts[best]]
        if not lower:
            report.dropped_rows["no response min_gap below the best"] += 1
            return []
        if rule == "best_vs_random":
            lower = [random.Random(f"{seed}:{row_no}").choice(lower)]
        elif rule == "best_vs_worst":
            lower = [min(lower, key=lambda i: scores[i])]
        group = groups(prompt)
        return [
            _same_kind({"prompt": prompt, "chosen": texts[best], "rejected": texts[i]})
            | {"group": group, "score_chosen": scores[best], "score_rejected": scores[i]}
            for i in lower
        ]

    required = {
        prompt_col: "prompt_col",
        responses_col: "responses_col",
    }
    if scores_col is not None:
        required[scores_col] = "scores_col"
    return _convert(source, "scores", required, row, on_bad_row, report)


# ----------------------------------------------------------------------------- votes
def read_votes(
    source: Any,
    prompt_col: str = "prompt",
    response_a_col: str = "response_a",
    response_b_col: str = "response_b",
    votes_col: str = "votes",
    on_bad_row: str = "error",
) -> tuple[list[dict], np.ndarray, DataReport]:
    """Read comparisons with per-labeler votes: ``(rows, votes, report)``.

    ``rows`` are ``{"prompt", "response_a", "response_b"}``; ``votes`` is the int8 matrix (n_items, n_labelers)
    of :mod:`rlhfkit.data.agreement` (1 = a, 0 = b, -1 = not rated). Every row must have one vote per labeler.
    """
    width: list[int] = []
    votes: list[list[int]] = []

    def row(record: dict, row_no: int, from_csv: bool) -> list[dict]:
        item = _same_kind(
            {
                "prompt": _text(record, prompt_col, from_csv),
                "response_a": _text(record, response_a_col, from_csv),
                "response_b": _text(record, response_b_col, from_csv),
            }
        )
        if item["response_a"] == item["response_b"]:
            raise _BadRow("identical chosen and rejected", "response_a is identical to response_b", "drop the row")
        v = _decode(record[votes_col], from_csv)
        if not isinstance(v, list) or not v or not all(type(x) is int and x in (-1, 0, 1) for x in v):
            raise _BadRow(
                "wrong type",
                f"column {votes_col!r} must be a list with one vote per labeler (1 = a, 0 = b, -1 = not rated), "
                f"got {str(v)[:60]!r}",
            )
        if width and len(v) != width[0]:
            raise _BadRow(
                "wrong type",
                f"column {votes_col!r} has {len(v)} votes but earlier rows have {width[0]} (one per labeler)",
                "use -1 for labelers who did not rate the item",
            )
        width[:] = [len(v)]
        votes.append(v)
        return [item]

    required = {
        prompt_col: "prompt_col",
        response_a_col: "response_a_col",
        response_b_col: "response_b_col",
        votes_col: "votes_col",
    }
    data = _convert(source, "votes", required, row, on_bad_row)
    return data.pairs, np.asarray(votes, dtype=np.int8), data.report


def from_votes(
    source: Any,
    prompt_col: str = "prompt",
    response_a_col: str = "response_a",
    response_b_col: str = "response_b",
    votes_col: str = "votes",
    min_agreement: float = 0.0,
    drop_unreliable: bool = False,
    labeler_threshold: float = 0.6,
    on_bad_row: str = "error",
) -> PreferenceData:
    """Per-labeler votes -> majority pairs with ``agreement`` and ``n_votes`` columns.

    Ties are dropped; so are items whose agreement is below ``min_agreement`` (default 0: keep every majority);
    with ``drop_unreliable`` the votes of flagged labelers are removed first
    (:func:`rlhfkit.data.agreement.filter_votes`).
    ``data.agreement`` holds the filter result (its ``report`` has kappa, alpha and the per-labeler table).
    """
    rows, votes, report = read_votes(source, prompt_col, response_a_col, response_b_col, votes_col, on_bad_row)
    result = filter_votes(votes, min_agreement, drop_unreliable, labeler_threshold)
    pairs = []
    for i in np.flatnonzero(result.keep).tolist():
        a_wins = result.stats.label[i] == 1
        r = rows[i]
        pairs.append(
            {
                "prompt": r["prompt"],
                "chosen": r["response_a"] if a_wins else r["response_b"],
                "rejected": r["response_b"] if a_wins else r["response_a"],
                "agreement": float(result.stats.agreement[i]),
                "n_votes": int(result.stats.n_votes[i]),
            }
        )
    report.pairs = len(pairs)
    report.dropped_rows.update({k: v for k, v in result.dropped.items() if v})
    if not pairs:
        raise DataError(f"no preference pairs left after agreement filtering: {report.summary()}")
    return PreferenceData(pairs=pairs, report=report, agreement=result)


# ----------------------------------------------------------------------------- dispatch
FORMATS: dict[str, Callable[..., PreferenceData]] = {
    "hh": from_hh,
    "columns": from_columns,
    "rankings": from_rankings,
    "scores": from_scores,
    "votes": from_votes,
}


# Column sets that identify a format, most specific first (used by format="auto").
_SIGNATURES = (
    ("votes", {"response_a", "response_b", "votes"}),
    ("rankings", {"prompt", "responses", "ranking"}),
    ("rankings", {"prompt", "responses", "scores"}),
    ("scores", {"prompt", "completions"}),
    ("columns", {"prompt", "chosen", "rejected"}),
    ("hh", {"chosen", "rejected"}),
)


def detect_format(source: Any, fix: str | None = None) -> str:
    """The format of ``source`` from its columns (first row for JSON/JSONL), for ``format="auto"``; ``fix`` replaces
    the error's advice when no format matches (default: set the format explicitly and name the columns)."""
    name, rows, columns, _ = read_rows(source)
    if columns is None:
        first = next((record for _, record in rows if isinstance(record, dict)), {})
        columns = list(first)
    for fmt, needed in _SIGNATURES:
        if needed <= set(columns):
            return fmt
    fix = fix or f"set the format explicitly (one of {', '.join(FORMATS)}) and name the columns"
    raise DataError(f"{name}: cannot tell the preference format from columns {sorted(columns)}; {fix}")


def load_preferences(source: Any, format: str = "auto", **options: Any) -> PreferenceData:
    """Convert ``source`` with the converter of ``format`` (a key of :data:`FORMATS`, or ``auto`` to detect it
    from the columns), passing ``options`` on."""
    if format == "auto":
        format = detect_format(source)
    if format not in FORMATS:
        raise DataError(f"format={format!r} is unknown; choose one of auto, {', '.join(FORMATS)}")
    return FORMATS[format](source, **options)
