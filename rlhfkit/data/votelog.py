"""Votes files: one row per vote, appended as labelers vote (``rlhfkit label``, the judge, the lab's labelers).

A vote row (one JSON object per line of ``votes.jsonl``):

``vote_id``
    unique id of this row.
``item_id``, ``prompt``, ``responses``
    the comparisons row voted on (:mod:`rlhfkit.data.comparisons`), ``responses`` in that file's order.
``labeler``
    who voted: a person's name from the link, ``lab:<j>`` for a simulated labeler, ``judge:<model>:<principle>``.
``mode``
    ``pairwise`` or ``ranking``.
``pair`` (pairwise)
    ``[i, j]``: the indices of the two responses compared; ``label`` is ``a`` (``responses[i]`` is better), ``b``
    (``responses[j]`` is better) or ``tie``; optional ``margin`` (Llama 2's scale, :data:`MARGINS`).
``ranking`` (ranking)
    the response indices best first, tied responses sharing a list: ``[[2], [0, 3], [1]]``. Every index once.
``shown_order``
    the response indices as the labeler saw them, left to right (so position bias can be measured; the stored
    label is already in the file's order).
``time``
    ISO 8601 UTC.
optional ``p``, ``p_orders`` (a judge)
    the probability that ``responses[i]`` is better, averaged over both orders, and the two one-order
    probabilities ``[p with i shown first, p with j shown first]``.

An **undo** is a row of its own, never an edit: ``{"vote_id", "undoes": <vote_id>, "item_id", "labeler", "time"}``.
:func:`read_vote_log` returns the votes still standing (:func:`read_vote_rows`: every row, undo rows too;
:func:`standing_votes` of rows already read); :func:`vote_problem` names what is wrong with a row.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import DataError
from rlhfkit.data.comparisons import iter_lines

MODES = ("pairwise", "ranking")
LABELS = ("a", "b", "tie")
MARGINS = ("much better", "better", "slightly better", "negligibly better", "unsure")
VOTE_KEYS = ("vote_id", "item_id", "prompt", "responses", "labeler", "mode", "shown_order", "time")


def now() -> str:
    """The time a vote row records: ISO 8601, UTC, milliseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def new_vote_id() -> str:
    return uuid.uuid4().hex[:16]


def pairwise_vote(
    item: dict[str, Any],
    labeler: str,
    pair: tuple[int, int] | list[int],
    label: str,
    shown_order: list[int],
    *,
    margin: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A pairwise vote row on comparisons row ``item``: ``label`` in the file's order (``a`` = ``responses[pair[0]]``
    is better)."""
    row = {
        "vote_id": new_vote_id(),
        "item_id": item["item_id"],
        "prompt": item["prompt"],
        "responses": item["responses"],
        "labeler": labeler,
        "mode": "pairwise",
        "pair": [int(pair[0]), int(pair[1])],
        "label": label,
        "shown_order": [int(i) for i in shown_order],
        "time": now(),
    }
    if margin is not None:
        row["margin"] = margin
    row.update(extra)
    _raise(row)
    return row


def ranking_vote(
    item: dict[str, Any], labeler: str, ranking: list[list[int]], shown_order: list[int], **extra: Any
) -> dict[str, Any]:
    """A ranking vote row on comparisons row ``item``: ``ranking`` best first, ties as one list."""
    row = {
        "vote_id": new_vote_id(),
        "item_id": item["item_id"],
        "prompt": item["prompt"],
        "responses": item["responses"],
        "labeler": labeler,
        "mode": "ranking",
        "ranking": [[int(i) for i in group] for group in ranking],
        "shown_order": [int(i) for i in shown_order],
        "time": now(),
    }
    row.update(extra)
    _raise(row)
    return row


def undo_row(vote: dict[str, Any]) -> dict[str, Any]:
    """The row that takes back ``vote``."""
    return {
        "vote_id": new_vote_id(),
        "undoes": vote["vote_id"],
        "item_id": vote["item_id"],
        "labeler": vote["labeler"],
        "time": now(),
    }


def _raise(row: dict[str, Any]) -> None:
    problem = vote_problem(row)
    if problem:
        raise DataError(f"vote {problem}")


def _indices(value: Any, k: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < k for i in value
    )


def vote_problem(row: Any) -> str | None:  # long: one check per field of the format, in the docstring's order
    """What is wrong with one votes-file row (None when it is a valid vote or undo)."""
    if not isinstance(row, dict):
        return f"is a {type(row).__name__}, not a JSON object"
    if "undoes" in row:
        missing = [k for k in ("vote_id", "undoes", "item_id", "labeler") if k not in row]
        return f"(an undo) has no {', '.join(map(repr, missing))}" if missing else None
    missing = [k for k in VOTE_KEYS if k not in row]
    if missing:
        return f"has no {', '.join(map(repr, missing))} (a vote row has {', '.join(VOTE_KEYS)})"
    responses = row["responses"]
    if not isinstance(responses, list) or len(responses) < 2 or not all(isinstance(r, str) for r in responses):
        return "responses must be a list of at least 2 texts"
    k = len(responses)
    if not isinstance(row["labeler"], str) or not row["labeler"].strip():
        return f"labeler={row['labeler']!r} must be a non-empty name"
    if row["mode"] not in MODES:
        return f"mode={row['mode']!r} must be one of {', '.join(MODES)}"
    if not _indices(row["shown_order"], k) or len(set(row["shown_order"])) != len(row["shown_order"]):
        return f"shown_order={row['shown_order']!r} must list distinct response indices 0..{k - 1}"
    if row["mode"] == "pairwise":
        pair = row.get("pair")
        if not _indices(pair, k) or len(pair) != 2 or pair[0] == pair[1]:
            return f"pair={pair!r} must be two different response indices 0..{k - 1}"
        if row.get("label") not in LABELS:
            return f"label={row.get('label')!r} must be one of {', '.join(LABELS)} (a pairwise vote)"
        if row.get("margin") is not None and row["margin"] not in MARGINS:
            return f"margin={row['margin']!r} must be one of {', '.join(MARGINS)}"
        p = row.get("p")
        if p is not None and not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            return f"p={p!r} must be a probability in [0, 1]"
        return None
    ranking = row.get("ranking")
    if not isinstance(ranking, list) or not all(_indices(g, k) and g for g in ranking):
        return f"ranking={ranking!r} must be lists of response indices, best first (ties share a list)"
    flat = sorted(i for g in ranking for i in g)
    if flat != list(range(k)):
        return f"ranking={ranking!r} must name each of the {k} responses exactly once"
    return None


def read_vote_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every row of a votes file, votes and undo rows, in file order, each checked.

    A bad row raises :class:`DataError` naming the file and row; an unfinished last line (a writer killed mid-line,
    never acknowledged) is skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"votes file {str(path)!r} does not exist; collect votes with `rlhfkit label`")
    rows: list[dict[str, Any]] = []
    for line_no, row in iter_lines(path):
        if isinstance(row, Exception):
            raise DataError(f"{path}: row {line_no} is not JSON ({row}); one JSON object per line")
        problem = vote_problem(row)
        if problem:
            raise DataError(f"{path}: row {line_no} {problem}")
        rows.append(row)
    return rows


def standing_votes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The votes of ``rows`` (:func:`read_vote_rows`) that no undo row takes back, in order."""
    undone = {r["undoes"] for r in rows if "undoes" in r}
    return [r for r in rows if "undoes" not in r and r["vote_id"] not in undone]


def read_vote_log(path: str | os.PathLike, *, keep_undone: bool = False) -> list[dict[str, Any]]:
    """The votes still standing in a votes file (undone votes and the undo rows removed), in file order.

    A bad row raises :class:`DataError` naming the file and row; an unfinished last line (a writer killed mid-line,
    never acknowledged) is skipped. With ``keep_undone`` every vote row is returned, undone or not.
    """
    rows = read_vote_rows(path)
    return [r for r in rows if "undoes" not in r] if keep_undone else standing_votes(rows)


def is_vote_log(columns: list[str] | set[str]) -> bool:
    """Whether a table with these columns is a votes file (one row per vote) rather than one row per item."""
    return {"item_id", "labeler", "mode", "responses"} <= set(columns)
