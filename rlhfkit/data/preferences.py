"""Preference data: read the common formats and normalise them into TRL's explicit-prompt preference format.

Every converter returns :class:`~rlhfkit.data.rows.PreferenceData`: a list of pairs ``{"prompt", "chosen",
"rejected", ...}`` that ``RewardTrainer`` / ``DPOTrainer`` accept as they are (string or conversational: lists of
``{"role", "content"}`` messages), and a :class:`~rlhfkit.data.rows.DataReport` with counts of rows read, pairs made,
rows skipped by reason and values kept as they came. Sources, text values and bad rows: :mod:`rlhfkit.data.rows`.

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
``votes`` (:func:`rlhfkit.data.votes.from_votes`)
    Comparisons ``response_a`` / ``response_b`` with per-labeler votes (a list column or one column per labeler, any
    label map, ties and missing votes): chosen/rejected by majority, with an ``agreement`` column; tie items never
    become pairs (:mod:`rlhfkit.data.votes`, statistics in :mod:`rlhfkit.data.agreement`).

Pairs from ``rankings`` and ``scores`` carry a ``group`` column: an integer shared by all pairs made from the same
row -- one labeler's ranking of one prompt's responses -- numbered in order (rows without pairs skip no number), so
a trainer (:mod:`rlhfkit.reward.config`'s K-wise loss) or a train/eval split can keep them together.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Callable
from itertools import combinations
from typing import Any

import numpy as np

from rlhfkit.core.errors import DataError
from rlhfkit.data.rows import (
    BadRow,
    DataReport,
    PreferenceData,
    check_text,
    convert,
    decode,
    distinct,
    read_rows,
    same_kind,
    text,
)
from rlhfkit.data.votes import from_votes

SCORE_RULES = {
    "best_vs_random": "best response vs one response drawn at random among those scoring at least min_gap lower "
    "(UltraFeedback-binarized style; one pair per prompt)",
    "best_vs_rest": "best response vs every response scoring at least min_gap lower",
    "best_vs_worst": "best response vs the lowest-scoring one, if at least min_gap lower (one pair per prompt)",
}
_ROLES = {"Human": "user", "Assistant": "assistant"}


# ----------------------------------------------------------------------------- hh
def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split an HH-RLHF transcript (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) into user/assistant messages.

    Message contents are stripped of surrounding whitespace. Raises DataError on text that is not a transcript.
    """
    try:
        return _parse_transcript(text, "transcript")
    except BadRow as bad:
        raise DataError(f"{bad.problem}; {bad.fix}") from None


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_FIX = "HH transcripts start with '\\n\\nHuman:' and alternate '\\n\\nHuman:' / '\\n\\nAssistant:' turns"


def _parse_transcript(text: str, where: str) -> list[dict[str, str]]:
    parts = _HH_TURN.split(text)  # [before, role, text, role, text, ...]
    if parts[0].strip():
        raise BadRow(
            "unparseable transcript", f"{where} has text before the first Human turn: {parts[0][:40]!r}", _HH_FIX
        )
    messages = [{"role": _ROLES[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]
    if not any(m["role"] == "assistant" for m in messages) or messages[0]["role"] != "user":
        raise BadRow("unparseable transcript", f"{where} has no Human turn followed by an Assistant turn", _HH_FIX)
    return messages


def from_hh(
    source: Any, chosen_col: str = "chosen", rejected_col: str = "rejected", on_bad_row: str = "error"
) -> PreferenceData:
    """HH-RLHF transcripts -> conversational pairs whose prompt is the shared dialogue prefix (see module doc)."""

    def row(record: dict, row_no: int, from_csv: bool, notes: Counter) -> list[dict]:
        texts = {}
        for col in (chosen_col, rejected_col):
            value = record[col]
            if not isinstance(value, str):
                raise BadRow("wrong type", f"column {col!r} is {type(value).__name__}; expected a transcript string")
            if not value.strip():
                raise BadRow("empty text", f"column {col!r} is empty", "remove the row")
            texts[col] = value
        distinct(texts[chosen_col], texts[rejected_col])
        chosen = _parse_transcript(texts[chosen_col], f"column {chosen_col!r}")
        rejected = _parse_transcript(texts[rejected_col], f"column {rejected_col!r}")
        k = 0
        while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
            k += 1
        while k > 0 and chosen[k - 1]["role"] != "user":  # the prompt ends with the user's turn
            k -= 1
        c_rest, r_rest = chosen[k:], rejected[k:]
        if k == 0 or not c_rest or not r_rest or c_rest[0]["role"] != "assistant" or r_rest[0]["role"] != "assistant":
            raise BadRow(
                "unparseable transcript",
                f"chosen and rejected do not share a dialogue prefix ending in a Human turn ({k} shared turns)",
                _HH_FIX,
            )
        distinct(c_rest, r_rest)
        return [{"prompt": chosen[:k], "chosen": c_rest, "rejected": r_rest}]

    required = {
        chosen_col: "chosen_col",
        rejected_col: "rejected_col",
    }
    return convert(source, "hh", required, row, on_bad_row)


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

    def row(record: dict, row_no: int, from_csv: bool, notes: Counter) -> list[dict]:
        pair = same_kind(
            {
                "prompt": text(record, prompt_col, from_csv, notes),
                "chosen": text(record, chosen_col, from_csv, notes, response=True),
                "rejected": text(record, rejected_col, from_csv, notes, response=True),
            }
        )
        distinct(pair["chosen"], pair["rejected"])
        conversational = isinstance(pair["prompt"], list)
        if kind and kind[0] != conversational:
            first, this = ("messages", "strings") if kind[0] else ("strings", "messages")
            raise BadRow("wrong type", f"holds {this} but earlier rows hold {first}", "use one format for every row")
        kind[:] = [conversational]
        return [pair]

    required = {
        prompt_col: "prompt_col",
        chosen_col: "chosen_col",
        rejected_col: "rejected_col",
    }
    return convert(source, "columns", required, row, on_bad_row)


# ----------------------------------------------------------------------------- rankings and scores
class _Groups:
    """Row number -> group id, numbered in order of first appearance (rows that made pairs)."""

    def __init__(self):
        self.ids: dict[int, int] = {}

    def __call__(self, row_no: int) -> int:
        return self.ids.setdefault(row_no, len(self.ids))


def _responses(record: dict, col: str, from_csv: bool) -> list:
    value = decode(record[col], from_csv)
    if not isinstance(value, list) or len(value) < 2:
        raise BadRow("wrong type", f"column {col!r} must be a list of at least 2 responses, got {str(value)[:40]!r}")
    return value


def _numbers(record: dict, col: str, k: int, from_csv: bool, what: str) -> list[float]:
    value = decode(record[col], from_csv)
    ok = isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value
    )
    if not ok or len(value) != k:
        raise BadRow("wrong type", f"column {col!r} must be a list of {k} numbers ({what}), got {str(value)[:60]!r}")
    return [float(x) for x in value]


def _ordered_pairs(prompt, responses, utility, report) -> list[dict]:
    """All pairs (i < j) with the higher-utility response as chosen; ties and identical texts dropped, counted."""
    pairs = []
    for i, j in combinations(range(len(responses)), 2):
        if utility[i] == utility[j]:
            report.dropped_pairs["tie"] += 1
        elif responses[i] == responses[j]:
            report.dropped_pairs["identical responses"] += 1
        else:
            best, worst = (i, j) if utility[i] > utility[j] else (j, i)
            pairs.append({"prompt": prompt, "chosen": responses[best], "rejected": responses[worst]})
    return pairs


def from_rankings(
    source: Any,
    prompt_col: str = "prompt",
    responses_col: str = "responses",
    ranking_col: str | None = "ranking",
    scores_col: str | None = None,
    on_bad_row: str = "error",
) -> PreferenceData:
    """K-wise rankings -> all C(K, 2) ordered pairs per row, tagged with ``group`` (one per row); tied pairs dropped.

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

    def row(record: dict, row_no: int, from_csv: bool, notes: Counter) -> list[dict]:
        prompt = text(record, prompt_col, from_csv, notes)
        responses = [
            check_text(r, f"response {i} of column {responses_col!r}", notes, response=True)
            for i, r in enumerate(_responses(record, responses_col, from_csv))
        ]
        what = "higher is better" if scores_col else "rank of each response, 0 = best"
        values = _numbers(record, order_col, len(responses), from_csv, what)
        utility = values if scores_col else [-v for v in values]
        for r in responses:
            same_kind({"prompt": prompt, "response": r})
        pairs = _ordered_pairs(prompt, responses, utility, report)
        return [pair | {"group": groups(row_no)} for pair in pairs]

    required = {
        prompt_col: "prompt_col",
        responses_col: "responses_col",
        order_col: "scores_col" if scores_col else "ranking_col",
    }
    return convert(source, "rankings", required, row, on_bad_row, report)


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

    def row(record: dict, row_no: int, from_csv: bool, notes: Counter) -> list[dict]:
        prompt = text(record, prompt_col, from_csv, notes)
        items = _responses(record, responses_col, from_csv)
        if scores_col is not None:
            texts = items
            scores = _numbers(record, scores_col, len(items), from_csv, "one score per response, higher is better")
        else:
            texts, scores = [], []
            for i, item in enumerate(items):
                if not isinstance(item, dict) or text_key not in item or score_key not in item:
                    raise BadRow(
                        "wrong type",
                        f"completion {i} of column {responses_col!r} is not a dict with keys {text_key!r} and "
                        f"{score_key!r}: {str(item)[:60]!r}",
                        "set text_key/score_key (CLI: --text-key/--score-key) or give scores_col",
                    )
                texts.append(item[text_key])
                scores.append(item[score_key])
            scores = _numbers({"s": scores}, "s", len(items), False, f"{score_key!r} of each completion")
        texts = [
            check_text(t, f"response {i} of column {responses_col!r}", notes, response=True)
            for i, t in enumerate(texts)
        ]
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
        group = groups(row_no)
        return [
            same_kind({"prompt": prompt, "chosen": texts[best], "rejected": texts[i]})
            | {"group": group, "score_chosen": scores[best], "score_rejected": scores[i]}
            for i in lower
        ]

    required = {
        prompt_col: "prompt_col",
        responses_col: "responses_col",
    }
    if scores_col is not None:
        required[scores_col] = "scores_col"
    return convert(source, "scores", required, row, on_bad_row, report)


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
    ("votes", {"item_id", "labeler", "mode", "responses"}),  # a votes file, one row per vote (rlhfkit label)
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
