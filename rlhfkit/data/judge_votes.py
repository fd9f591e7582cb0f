"""An AI judge's votes, measured: position statistics and, in the lab, accuracy against the gold reward.

A judge's vote rows (:mod:`rlhfkit.data.votelog`, labeler ``judge:<model>:<principle>``) carry ``p_orders = [P(i
better | i shown first), P(i better | j shown first)]`` beside the two-order label (:mod:`rlhfkit.feedback.judge`).
From the one-order verdicts (``p > 0.5``):

* position consistency: the share of judgements whose two one-order verdicts pick the same response (a judge with
  no position bias keeps its verdict after the swap; Zheng et al. 2023 measured ~65% for GPT-4);
* left-choice rate: the share of one-order verdicts that pick the response shown first (0.5 without position bias).

In the lab, :func:`gold_accuracy` scores votes against :func:`rlhfkit.lab.gold_reward`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rlhfkit import lab

JUDGE_PREFIX = "judge:"  # a labeler named judge:<model>:<principle> is an AI judge


def is_judge(labeler: str) -> bool:
    return labeler.startswith(JUDGE_PREFIX)


def _judged(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if isinstance(r.get("p_orders"), list) and len(r["p_orders"]) == 2]


def judge_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Position statistics of judge votes (rows with ``p_orders``; others are ignored): ``n_pairs`` (judgements, one
    per item, pair and principle), ``position_consistency``, ``left_choice_rate`` and ``tie_rate`` (the share of
    ``tie`` votes); the rates are None without rows."""
    rows = _judged(rows)
    if not rows:
        return {"n_pairs": 0, "position_consistency": None, "left_choice_rate": None, "tie_rate": None}
    first_wins = np.array([r["p_orders"] for r in rows], dtype=np.float64) > 0.5  # [i first, j first]: i chosen
    left = np.concatenate([first_wins[:, 0], ~first_wins[:, 1]])  # the response shown first was chosen
    return {
        "n_pairs": len(rows),
        "position_consistency": float(np.mean(first_wins[:, 0] == first_wins[:, 1])),
        "left_choice_rate": float(np.mean(left)),
        "tie_rate": float(np.mean([r["label"] == "tie" for r in rows])),
    }


def gold_accuracy(rows: Sequence[dict[str, Any]], *, order: int | None = None) -> tuple[float, int]:
    """``(accuracy, n)`` of pairwise votes on lab prompts against the gold reward, on the ``n`` votes whose two
    responses' gold rewards differ; a tie vote counts one half.

    ``order`` 0 or 1 scores a judge's one-order verdict instead of its label: ``p_orders[order] > 0.5`` (0: with
    ``responses[i]`` shown first, as one order of a judge that is never swapped would vote).
    """
    hits: list[float] = []
    for r in rows:
        if r.get("mode") != "pairwise":
            continue
        i, j = r["pair"]
        gi, gj = lab.gold_reward(r["prompt"], r["responses"][i]), lab.gold_reward(r["prompt"], r["responses"][j])
        if gi == gj:
            continue
        if order is not None:
            hits.append(float((r["p_orders"][order] > 0.5) == (gi > gj)))
        else:
            hits.append(0.5 if r["label"] == "tie" else float((r["label"] == "a") == (gi > gj)))
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)
