"""A reward-model ensemble on held-out preference pairs: each member, the ensemble and the members' disagreement.

:func:`evaluate_ensemble` scores the pairs once per member (formatted as ``RewardTrainer`` trained them,
:func:`rlhfkit.scoring.encode_pairs`) and reports, with :mod:`rlhfkit.rm_eval`'s statistics, every member on its raw
scores and the ensemble on the members' mean standardised score -- the reward ``reward_aggregation: mean`` gives RL.
The pipeline's ``rm_eval`` stage writes the ensemble's report where a single model's goes (the gate judges it),
each member's in ``rm_eval/member-k/`` and the disagreement in ``rm_eval/ensemble.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rlhfkit.rm_eval import RewardModelReport, pair_report
from rlhfkit.scoring import EnsembleScorer, encode_pairs, resolve_pad_token_id, score_token_ids


@dataclass
class EnsembleReport:
    """An ensemble's evaluation on held-out pairs (:func:`evaluate_ensemble`).

    Attributes:
        ensemble: the report of the members' mean standardised score (what ``reward_aggregation: mean`` gives RL;
            its calibration is that of ``sigmoid`` of the standardised margin).
        members: one report per member, on its own raw scores.
        disagreement: ``member_std_mean`` (mean over the 2n responses of the members' std of standardised
            scores), ``split_pairs`` (share of pairs the members do not all rank the same way), and the ensemble's
            ``accuracy_agreed`` / ``accuracy_split`` on those two groups (None for an empty group).
    """

    ensemble: RewardModelReport
    members: list[RewardModelReport]
    disagreement: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "disagreement": self.disagreement,
            "members": [
                {k: m.to_dict()[k] for k in ("n_pairs", "accuracy", "auc", "ece", "reward_mean", "reward_std")}
                for m in self.members
            ],
        }


def evaluate_ensemble(
    scorer: EnsembleScorer, pairs, *, max_length: int | None = None, batch_size: int = 16
) -> EnsembleReport:
    """Score held-out preference pairs with every member and report each member, the ensemble and their
    disagreement (see :class:`EnsembleReport`). Pairs as for :func:`rlhfkit.rm_eval.evaluate_reward_model`."""
    tokenizer = scorer.members[0].tokenizer
    rows, ids, n_dropped = encode_pairs(tokenizer, pairs, max_length)
    n, raw = len(rows), []
    for k in range(len(scorer)):
        member = scorer.activate(k)
        pad = resolve_pad_token_id(member.model, tokenizer)
        raw.append(score_token_ids(member.model, ids, pad_token_id=pad, batch_size=batch_size))
    scores = np.stack(raw)  # (K, 2n)
    z = (scores - np.array([[m.mean] for m in scorer.members])) / np.array([[m.std] for m in scorer.members])
    mean = z.mean(0)
    margins = z[:, :n] - z[:, n:]  # (K, n)
    agreed = (np.sign(margins) == np.sign(margins[:1])).all(0) & (margins[0] != 0)
    correct = mean[:n] > mean[n:]
    return EnsembleReport(
        ensemble=pair_report(rows, mean[:n], mean[n:], n_dropped),
        members=[pair_report(rows, s[:n], s[n:], n_dropped) for s in scores],
        disagreement={
            "member_std_mean": float(z.std(0).mean()),
            "split_pairs": float(1 - agreed.mean()),
            "accuracy_agreed": float(correct[agreed].mean()) if agreed.any() else None,
            "accuracy_split": float(correct[~agreed].mean()) if (~agreed).any() else None,
        },
    )
