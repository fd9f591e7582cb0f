"""An AI judge's votes, measured: position statistics and, in the lab, accuracy against the gold reward.

A judge's vote rows (:mod:`rlhfkit.data.votelog`, labeler ``judge:<model>:<principle>``) carry ``p_orders = [P(i
better | i shown first), P(i better | j shown first)]`` beside the two-order label (:mod:`rlhfkit.feedback.judge`).
From the one-order verdicts (``p > 0.5``):

* position consistency: the share of judgements whose two one-order verdicts pick the same response (a judge with
  no position bias keeps its verdict after the swap; Zheng et al. 2023 measured ~65% for GPT-4);
* left-choice rate: the share of one-order verdicts that pick the response shown first (0.5 without position bias).

In the lab, :func:`gold_accuracy` scores votes against :func:`rlhfkit.lab.gold_reward`.

**Trust, but verify** (:func:`judge_summary`, the ``judge`` section of ``rlhfkit data agreement``): where people
voted on the same pairs as the judge, the judge's verdict on a pair (the majority of its labelers -- principles -- on
it) is compared with each person and with the people's majority, by Cohen's kappa
(:func:`rlhfkit.data.agreement.cohen_kappas`) and by plain agreement with the majority; the judge is flagged when its
mean kappa with the people is below the people's mean kappa with each other (it agrees with people less than people
agree among themselves). Every labeler whose name does not start with ``judge:`` counts as a person (the lab's
simulated labelers included).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.data.agreement import MISSING, cohen_kappas, item_stats, pair_key
from rlhfkit.data.votes import read_vote_log_table

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


def is_lab(rows: Sequence[dict[str, Any]]) -> bool:
    """Whether every row's prompt is a lab prompt (so the lab's gold reward can judge the votes)."""

    def lab_prompt(prompt: Any) -> bool:
        try:
            lab.parse_prompt(prompt)
        except (ConfigError, TypeError):
            return False
        return True

    return bool(rows) and all(isinstance(r["prompt"], str) and lab_prompt(r["prompt"]) for r in rows)


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def judge_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The judge in a votes file's standing votes (:func:`rlhfkit.data.votelog.read_vote_log`), against the people
    who voted on the same pairs; None when no labeler is a judge.

    Keys: :func:`judge_stats`' (``n_pairs``, ``position_consistency``, ``left_choice_rate``, ``tie_rate``);
    ``n_shared`` (pairs with a judge verdict and a people's majority); ``agreement_with_humans`` (Cohen's kappa of
    the judge's verdict with each person, and with ``"majority"``); ``accuracy_vs_majority``; ``human_kappa`` and
    ``judge_kappa`` (mean kappa between people, and of the judge with each person); ``flag_below_human_agreement``
    (``judge_kappa < human_kappa``; None when either is undefined); ``labelers`` (each judge labeler's
    ``n_pairs``, kappa with the majority and accuracy against it); in the lab ``accuracy_vs_gold``
    (:func:`gold_accuracy`, a tie one half).
    """
    judged = [r for r in rows if is_judge(r["labeler"])]
    if not judged:
        return None
    table = read_vote_log_table(list(rows))
    names = table.labelers
    judges = [j for j, name in enumerate(names) if is_judge(name)]
    people = [names[j] for j in range(len(names)) if j not in judges]
    verdict = item_stats(table.votes[:, judges]).label
    no_majority = np.full_like(verdict, MISSING)
    majority = item_stats(table.votes[:, [names.index(p) for p in people]]).label if people else no_majority
    columns = [
        verdict,
        majority,
        *(table.votes[:, j] for j in judges),
        *(table.votes[:, names.index(p)] for p in people),
    ]
    kappa, _ = cohen_kappas(np.column_stack(columns), ["judge", "majority", *(names[j] for j in judges), *people])
    shared = (verdict != MISSING) & (majority != MISSING)
    human_kappa = _mean(kappa[pair_key(a, b)] for a, b in combinations(people, 2))
    with_people = {p: kappa[pair_key("judge", p)] for p in people}
    judge_kappa = _mean(with_people.values())
    with_people["majority"] = kappa[pair_key("judge", "majority")]
    out = {
        **judge_stats(judged),
        "n_shared": int(shared.sum()),
        "agreement_with_humans": with_people,
        "accuracy_vs_majority": float(np.mean(verdict[shared] == majority[shared])) if shared.any() else None,
        "human_kappa": human_kappa,
        "judge_kappa": judge_kappa,
        "flag_below_human_agreement": None if None in (human_kappa, judge_kappa) else judge_kappa < human_kappa,
        "labelers": {},
    }
    for j in judges:
        mine = (table.votes[:, j] != MISSING) & (majority != MISSING)
        out["labelers"][names[j]] = {
            "n_pairs": int((table.votes[:, j] != MISSING).sum()),
            "kappa_with_majority": kappa[pair_key("majority", names[j])],
            "accuracy_vs_majority": float(np.mean(table.votes[mine, j] == majority[mine])) if mine.any() else None,
        }
    if is_lab(judged):
        out["accuracy_vs_gold"] = gold_accuracy(judged)[0]
    return out
