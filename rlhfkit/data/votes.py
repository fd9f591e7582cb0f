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
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rlhfkit.core.errors import DataError
from rlhfkit.data.agreement import MISSING, TIE, A, B, FilterResult, filter_votes
from rlhfkit.data.rows import BadRow, DataReport, PreferenceData, convert, decode, is_null, read_rows, same_kind, text

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
    ``ties="margin"``). A votes file with one row per vote (``rlhfkit label``) goes to :func:`from_vote_log`.

    Votes come in ``votes_col`` (a list per row) or ``labeler_cols`` (one column each), read through the label map
    ``labels`` (see the module doc). Tie items never become pairs (``ties``: ``"drop"`` or ``"margin"``, see
    :func:`rlhfkit.data.agreement.filter_votes`); neither do items with identical responses or whose agreement is
    below ``min_agreement`` (default 0: keep every majority). With ``drop_unreliable`` the votes of flagged labelers
    (agreement below ``labeler_threshold``, or more than ``max_tie_rate`` ties) are removed first. ``data.agreement``
    holds the :class:`~rlhfkit.data.agreement.FilterResult` (its ``report``: kappa, alpha, Cohen's kappa per pair of
    labelers and the per-labeler table, over every item with votes).
    """
    if labeler_cols is None and labels is None and votes_col == "votes" and is_vote_log_source(source):
        return from_vote_log(
            source,
            min_agreement,
            drop_unreliable,
            labeler_threshold,
            ties=ties,
            max_tie_rate=max_tie_rate,
        )
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


# ----------------------------------------------------------------------------- votes files (one row per vote)
class LogTable(NamedTuple):
    """What :func:`read_vote_log_table` returns: :class:`VoteTable`'s fields for the pairwise items of a votes file,
    plus each item's ``item_id`` / ``pair`` / soft labels and each labeler's left-choice rate.

    An item is one pair ``(i, j)``, ``i < j``, of one comparisons row: a pairwise vote on ``[j, i]`` counts with its
    label swapped, and a ranking vote counts once for every pair of its K responses (a tie where they share a rank).
    ``p``: per item, the mean of the votes' soft labels ``p`` (the probability that ``response_a`` is better; NaN
    unless every vote on the item carries one). ``left_choice``: per labeler, the share of their a-or-b pairwise votes
    that chose the response shown on the left (NaN without such votes): 0.5 is no position bias.
    """

    rows: list[dict]
    votes: np.ndarray
    report: DataReport
    labelers: list[str]
    p: np.ndarray
    left_choice: dict[str, float]


def _log_rows(source: Any) -> tuple[str, list[dict]]:
    from rlhfkit.data.votelog import read_vote_log, vote_problem

    if isinstance(source, (str, os.PathLike)):
        return str(source), read_vote_log(source)
    rows = list(source)
    undone = set()
    for n, row in enumerate(rows, start=1):
        problem = vote_problem(row)
        if problem:
            raise DataError(f"votes row {n} {problem}")
        if "undoes" in row:
            undone.add(row["undoes"])
    return "rows", [r for r in rows if "undoes" not in r and r["vote_id"] not in undone]


def _pair_codes(vote: dict) -> list[tuple[int, int, int]]:
    """``(i, j, code)`` with ``i < j`` for every pair a vote decides (code: A = responses[i] better, B, TIE)."""
    if vote["mode"] == "pairwise":
        i, j = vote["pair"]
        code = {"a": A, "b": B, "tie": TIE}[vote["label"]]
        if i > j:
            i, j, code = j, i, {A: B, B: A, TIE: TIE}[code]
        return [(i, j, code)]
    rank = {idx: r for r, group in enumerate(vote["ranking"]) for idx in group}
    k = len(vote["responses"])
    return [
        (i, j, TIE if rank[i] == rank[j] else (A if rank[i] < rank[j] else B))
        for i in range(k)
        for j in range(i + 1, k)
    ]


def read_vote_log_table(source: Any) -> LogTable:
    """A votes file (path or rows, :mod:`rlhfkit.data.votelog`) as the item x labeler matrix of
    :mod:`rlhfkit.data.agreement`. A labeler who voted twice on one pair counts with their last vote."""
    name, log = _log_rows(source)
    report = DataReport(source=name, format="votes", rows=len(log))
    items: dict[tuple[str, int, int], int] = {}
    rows: list[dict] = []
    labelers: dict[str, int] = {}
    cells: dict[tuple[int, int], int] = {}
    soft: dict[int, list[float | None]] = {}
    left = Counter()
    sided = Counter()
    for vote in log:
        who = labelers.setdefault(vote["labeler"], len(labelers))
        for i, j, code in _pair_codes(vote):
            key = (vote["item_id"], i, j)
            if key not in items:
                items[key] = len(rows)
                responses = vote["responses"]
                rows.append(
                    {
                        "prompt": vote["prompt"],
                        "response_a": responses[i],
                        "response_b": responses[j],
                        "item_id": vote["item_id"],
                        "pair": [i, j],
                        "k": len(responses),
                    }
                )
            n = items[key]
            if (n, who) in cells:
                report.notes["revotes (last one counts)"] += 1
            cells[(n, who)] = code
            p = vote.get("p") if vote["mode"] == "pairwise" else None
            if p is not None and vote["pair"][0] > vote["pair"][1]:
                p = 1.0 - p
            soft.setdefault(n, []).append(p)
        if vote["mode"] == "pairwise" and vote["label"] != "tie":
            sided[vote["labeler"]] += 1
            chosen = vote["pair"][0] if vote["label"] == "a" else vote["pair"][1]
            left[vote["labeler"]] += int(chosen == vote["shown_order"][0])
    votes = np.full((len(rows), len(labelers)), MISSING, dtype=np.int8)
    for (n, who), code in cells.items():
        votes[n, who] = code
    p = np.array(
        [
            np.mean(ps) if ps and all(x is not None for x in ps) else np.nan
            for ps in (soft[n] for n in range(len(rows)))
        ]
    )
    left_choice = {who: (left[who] / sided[who] if sided[who] else float("nan")) for who in labelers}
    return LogTable(rows, votes, report, list(labelers), p, left_choice)


def is_vote_log_source(source: Any) -> bool:
    """Whether ``source`` (a path, a list of rows or a dataset) is a votes file, one row per vote."""
    from rlhfkit.data.votelog import is_vote_log

    try:
        _, rows, columns, _ = read_rows(source)
    except DataError:
        return False
    if columns is None:
        first = next((record for _, record in rows if isinstance(record, dict)), {})
        columns = list(first)
    return is_vote_log(columns)


def _log_pairs(table: LogTable, result: FilterResult, ties: str) -> list[dict]:
    groups = Counter(r["item_id"] for r in table.rows)
    # One item with several pairs (K > 2) makes it K-wise data: then every pair needs a group (a K = 2 item is a
    # group of one pair), since the reward trainer groups all rows or none.
    grouped = any(n > 1 for n in groups.values()) or any(r["k"] > 2 for r in table.rows)
    pairs = []
    for n in np.flatnonzero(result.keep).tolist():
        a_wins = result.label[n] == A
        r = table.rows[n]
        pair = {
            "prompt": r["prompt"],
            "chosen": r["response_a"] if a_wins else r["response_b"],
            "rejected": r["response_b"] if a_wins else r["response_a"],
            "agreement": float(result.agreement[n]),
            "n_votes": int(result.stats.n_votes[n]),
            "item_id": r["item_id"],
        }
        if grouped:
            pair["group"] = r["item_id"]
        if not np.isnan(table.p[n]):
            pair["p"] = float(table.p[n] if a_wins else 1.0 - table.p[n])
        if ties == "margin":
            pair["margin"] = float(result.margin[n])
        pairs.append(pair)
    return pairs


def from_vote_log(
    source: Any,
    min_agreement: float = 0.0,
    drop_unreliable: bool = False,
    labeler_threshold: float = 0.6,
    *,
    ties: str = "drop",
    max_tie_rate: float = 0.5,
    require_pairs: bool = True,
) -> PreferenceData:
    """A votes file (``rlhfkit label``, the judge, the lab) -> majority pairs, as :func:`from_votes` does for a table
    with one row per item: the same agreement statistics (plus each labeler's left-choice rate) and filter.

    Pairs of an item with K > 2 responses share a ``group`` (its ``item_id``: the K-wise reward loss sees them
    together); an item whose votes all carry a judge's ``p`` gives its pair ``p`` = the mean probability that
    ``chosen`` is better (soft labels). ``require_pairs=False`` returns an empty result instead of raising when no
    pair survives (the labeling page's ``/status``).
    """
    table = read_vote_log_table(source)
    identical = np.array([r["response_a"] == r["response_b"] for r in table.rows], dtype=bool)
    result = filter_votes(
        table.votes,
        min_agreement,
        drop_unreliable,
        labeler_threshold,
        ties=ties,
        identical=identical,
        names=table.labelers,
        max_tie_rate=max_tie_rate,
    )
    result.report.left_choice_rate = {k: (None if math.isnan(v) else v) for k, v in table.left_choice.items()}
    pairs = _log_pairs(table, result, ties)
    table.report.pairs = len(pairs)
    table.report.dropped_rows.update({k: v for k, v in result.dropped.items() if v})
    if not pairs and require_pairs:
        raise DataError(
            f"no preference pairs left after agreement filtering: {table.report.summary()}; lower min_agreement"
        )
    return PreferenceData(pairs=pairs, report=table.report, agreement=result)


def vote_log_agreement(source: Any, **options: Any) -> dict[str, Any]:
    """:func:`agreement_summary` of a votes file (path or rows), without raising when no pair is left yet."""
    return agreement_summary(from_vote_log(source, require_pairs=False, **options))


class LabellingProgress(NamedTuple):
    """How far a comparisons file is labelled (:func:`labelling_progress`): standing votes on its items, and its pairs
    of responses that at least one vote decides, of all of them."""

    votes: int
    pairs_labelled: int
    pairs: int

    def enough(self, min_votes: int | None) -> bool:
        """``min_votes`` votes, or (None) every pair labelled at least once."""
        return self.votes >= min_votes if min_votes is not None else self.pairs_labelled >= self.pairs

    def summary(self) -> str:
        return f"{self.votes} votes, {self.pairs_labelled} of {self.pairs} pairs labelled"


def labelling_progress(votes: str | os.PathLike | None, items: Sequence[dict]) -> LabellingProgress:
    """The standing votes of the votes file ``votes`` (None or a missing file: none yet) on the comparisons rows
    ``items`` (votes on other items are not counted), and how many of their pairs those votes decide (a ranking vote
    decides every pair of its item)."""
    from rlhfkit.data.votelog import read_vote_log

    k = {x["item_id"]: len(x["responses"]) for x in items}
    rows = [] if votes is None or not os.path.exists(votes) else read_vote_log(votes)
    rows = [v for v in rows if v["item_id"] in k]
    decided = {(v["item_id"], i, j) for v in rows for i, j, _ in _pair_codes(v)}
    return LabellingProgress(len(rows), len(decided), sum(n * (n - 1) // 2 for n in k.values()))
