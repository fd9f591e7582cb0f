"""Per-labeler votes as annotation tools export them -> agreement statistics and majority pairs.

A comparison row holds a prompt, ``response_a``, ``response_b`` and the labelers' votes, either

* in one list column (``votes_col``, default ``votes``): one vote per labeler, the same length on every row; the
  labelers are named ``"0"``, ``"1"``, ...; or
* in one column per labeler (``labeler_cols``, e.g. ``["ann1", "ann2", "ann3"]``; Label Studio, Argilla, Scale and
  MTurk exports): the labelers are named after the columns.

A **label map** says what each raw value means: ``labels="1=a,2=b,0=tie"`` (or ``{1: "a", 2: "b", 0: "tie"}``;
strings too: ``"A=a,B=b,Tie=tie"``). Targets are ``a`` (response_a is better), ``b``, ``tie`` and ``missing``. The
default, :data:`DEFAULT_LABELS`, is the lab's coding: ``1`` = a, ``0`` = b, ``-1`` = not rated. Whatever the map,
an empty or null cell (``""``, ``None``, NaN) is a missing vote, and a value outside the map is a row-level error
naming the row, the column and the allowed labels. Integers match their text and integral floats (``2.0``, as
pandas writes integer columns with nulls) their integer text; strings are matched after stripping spaces.

Every row with valid text and votes counts for the agreement statistics (:mod:`rlhfkit.data.agreement`); which
items become training pairs is a separate filter (:func:`rlhfkit.data.agreement.filter_votes`, counts per reason in
``report.dropped_rows``): no votes, identical responses, ties (``ties="drop"``; ``ties="margin"`` keeps items with
more votes for one side and gives the pair TRL's ``margin`` column), agreement below ``min_agreement``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rlhfkit.core.errors import DataError
from rlhfkit.data.agreement import MISSING, TIE, A, B, FilterResult, filter_votes
from rlhfkit.data.rows import BadRow, DataReport, PreferenceData, convert, decode, is_null, same_kind, text

TARGETS = {"a": A, "b": B, "tie": TIE, "missing": MISSING}
DEFAULT_LABELS = {"1": "a", "0": "b", "-1": "missing"}


# ----------------------------------------------------------------------------- label maps
def label_key(value: Any) -> str | None:
    """The text a vote cell is looked up by in a label map; None for a missing vote (None, NaN, empty string)."""
    if is_null(value):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    key = str(value).strip()
    return key or None


def parse_labels(labels: str | Mapping | None) -> dict[str, str]:
    """A label map as ``{raw text: target}``: from ``"1=a,2=b,0=tie"``, a mapping, or None (:data:`DEFAULT_LABELS`).

    Raises DataError for a malformed entry, an unknown target, a value given twice, or a map without both ``a`` and
    ``b``.
    """
    if labels is None:
        return dict(DEFAULT_LABELS)
    if isinstance(labels, str):
        entries = []
        for part in labels.split(","):
            if "=" not in part:
                raise DataError(f"labels={labels!r}: {part.strip()!r} is not VALUE=TARGET; write e.g. '1=a,2=b,0=tie'")
            raw, target = part.rsplit("=", 1)
            entries.append((raw, target))
    elif isinstance(labels, Mapping):
        entries = list(labels.items())
    else:
        raise DataError(f"labels={labels!r}: give 'VALUE=TARGET,...' (e.g. '1=a,2=b,0=tie') or a dict")
    out: dict[str, str] = {}
    for raw, target in entries:
        key, target = label_key(raw), str(target).strip().lower()
        if key is None:
            raise DataError(f"labels={labels!r}: an empty value; empty cells are missing votes already")
        if target not in TARGETS:
            raise DataError(f"labels={labels!r}: target {target!r} for {key!r}; targets are {', '.join(TARGETS)}")
        if key in out:
            raise DataError(f"labels={labels!r}: value {key!r} is mapped twice")
        out[key] = target
    if not {"a", "b"} <= set(out.values()):
        raise DataError(f"labels={labels!r}: map some value to 'a' (response_a better) and some to 'b'")
    return out


def _describe(label_map: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in label_map.items())


# ----------------------------------------------------------------------------- reading
class VoteTable(NamedTuple):
    """What :func:`read_votes` returns.

    rows: ``{"prompt", "response_a", "response_b"}`` per item. votes: the int8 matrix ``(n_items, n_labelers)`` of
    :mod:`rlhfkit.data.agreement` (1 = a, 0 = b, 2 = tie, -1 = missing). report: what was read. labelers: the
    labelers' names (the vote columns, or ``"0"``, ``"1"``, ... for a list column).
    """

    rows: list[dict]
    votes: np.ndarray
    report: DataReport
    labelers: list[str]


def read_votes(
    source: Any,
    prompt_col: str = "prompt",
    response_a_col: str = "response_a",
    response_b_col: str = "response_b",
    votes_col: str = "votes",
    on_bad_row: str = "error",
    *,
    labeler_cols: Sequence[str] | str | None = None,
    labels: str | Mapping | None = None,
) -> VoteTable:
    """Read comparisons with per-labeler votes (a ``votes_col`` list, or ``labeler_cols``) through a label map.

    ``labeler_cols`` may be a list or a comma-separated string; with it, ``votes_col`` is not read. Every row with
    valid text and votes is an item, identical responses included (they are filtered later, not here).
    """
    label_map = parse_labels(labels)
    codes = {k: TARGETS[v] for k, v in label_map.items()}
    if isinstance(labeler_cols, str):
        labeler_cols = [c.strip() for c in labeler_cols.split(",") if c.strip()]
    if labeler_cols is not None and len(labeler_cols) < 1:
        raise DataError("labeler_cols is empty; name one column per labeler, e.g. ann1,ann2,ann3")
    width: list[int] = []
    votes: list[list[int]] = []

    def code(value: Any, where: str) -> int:
        key = label_key(value)
        if key is None:
            return MISSING
        if key not in codes:
            raise BadRow(
                "bad label",
                f"{where} has label {key!r}, not one of the labels {_describe(label_map)}",
                "map it with labels=... (CLI: --labels) or leave the cell empty for a missing vote",
            )
        return codes[key]

    def row(record: dict, row_no: int, from_csv: bool, notes: Counter) -> list[dict]:
        item = same_kind(
            {
                "prompt": text(record, prompt_col, from_csv, notes),
                "response_a": text(record, response_a_col, from_csv, notes, response=True),
                "response_b": text(record, response_b_col, from_csv, notes, response=True),
            }
        )
        if labeler_cols is not None:
            v = [code(record[c], f"column {c!r}") for c in labeler_cols]
        else:
            raw = decode(record[votes_col], from_csv)
            if not isinstance(raw, list) or not raw:
                raise BadRow(
                    "wrong type",
                    f"column {votes_col!r} must be a list with one vote per labeler ({_describe(label_map)}), "
                    f"got {str(raw)[:60]!r}",
                    "or give one column per labeler with labeler_cols (CLI: --labeler-cols)",
                )
            v = [code(x, f"column {votes_col!r} vote {i + 1}") for i, x in enumerate(raw)]
            if width and len(v) != width[0]:
                raise BadRow(
                    "wrong type",
                    f"column {votes_col!r} has {len(v)} votes but earlier rows have {width[0]} (one per labeler)",
                    "use an empty value (null) for labelers who did not rate the item",
                )
            width[:] = [len(v)]
        votes.append(v)
        return [item]

    vote_cols = {c: "labeler_cols" for c in labeler_cols} if labeler_cols is not None else {votes_col: "votes_col"}
    required = {
        prompt_col: "prompt_col",
        response_a_col: "response_a_col",
        response_b_col: "response_b_col",
        **vote_cols,
    }
    data = convert(source, "votes", required, row, on_bad_row)
    names = list(labeler_cols) if labeler_cols is not None else [str(j) for j in range(width[0] if width else 0)]
    return VoteTable(data.pairs, np.asarray(votes, dtype=np.int8).reshape(len(votes), len(names)), data.report, names)


# ----------------------------------------------------------------------------- votes -> pairs
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
    *,
    labeler_cols: Sequence[str] | str | None = None,
    labels: str | Mapping | None = None,
    ties: str = "drop",
    max_tie_rate: float = 0.5,
) -> PreferenceData:
    """Per-labeler votes -> majority pairs with ``agreement`` and ``n_votes`` columns (and ``margin`` with
    ``ties="margin"``).

    Votes come in ``votes_col`` (a list per row) or ``labeler_cols`` (one column each), read through the label map
    ``labels`` (see the module doc). Tie items never become pairs (``ties``: ``"drop"`` or ``"margin"``, see
    :func:`rlhfkit.data.agreement.filter_votes`); neither do items with identical responses or whose agreement is
    below ``min_agreement`` (default 0: keep every majority). With ``drop_unreliable`` the votes of flagged labelers
    (agreement below ``labeler_threshold``, or more than ``max_tie_rate`` ties) are removed first. ``data.agreement``
    holds the :class:`~rlhfkit.data.agreement.FilterResult` (its ``report``: kappa, alpha, Cohen's kappa per pair of
    labelers and the per-labeler table, over every item with votes).
    """
    rows, votes, report, names = read_votes(
        source,
        prompt_col,
        response_a_col,
        response_b_col,
        votes_col,
        on_bad_row,
        labeler_cols=labeler_cols,
        labels=labels,
    )
    identical = np.array([r["response_a"] == r["response_b"] for r in rows], dtype=bool)
    result = filter_votes(
        votes,
        min_agreement,
        drop_unreliable,
        labeler_threshold,
        ties=ties,
        identical=identical,
        names=names,
        max_tie_rate=max_tie_rate,
    )
    pairs = []
    for i in np.flatnonzero(result.keep).tolist():
        a_wins = result.label[i] == A
        r = rows[i]
        pair = {
            "prompt": r["prompt"],
            "chosen": r["response_a"] if a_wins else r["response_b"],
            "rejected": r["response_b"] if a_wins else r["response_a"],
            "agreement": float(result.agreement[i]),
            "n_votes": int(result.stats.n_votes[i]),
        }
        if ties == "margin":
            pair["margin"] = float(result.margin[i])
        pairs.append(pair)
    report.pairs = len(pairs)
    report.dropped_rows.update({k: v for k, v in result.dropped.items() if v})
    if not pairs:
        raise DataError(f"no preference pairs left after agreement filtering: {report.summary()}; lower min_agreement")
    return PreferenceData(pairs=pairs, report=report, agreement=result)


def agreement_summary(data: PreferenceData) -> dict[str, Any]:
    """The machine-readable agreement report of :func:`from_votes`'s result (``rlhfkit data agreement --json``).

    Keys: ``n_items``, ``n_labelers``, ``fleiss_kappa`` (None when undefined, with ``fleiss_kappa_note``),
    ``krippendorff_alpha``, ``cohen_kappa`` (keyed ``"<labeler>,<labeler>"``), ``labelers`` (one row each), ``kept``,
    ``dropped`` (items, by reason), ``dropped_labelers`` (names), ``data`` (the rows read, skipped and kept as
    they came).
    """
    result: FilterResult = data.agreement
    out = result.report.to_dict()
    names = result.report.labeler_names
    out.update(
        kept=result.n_kept,
        dropped=dict(result.dropped),
        dropped_labelers=[names[j] for j in result.dropped_labelers],
        data=data.report.to_dict(),
    )
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
