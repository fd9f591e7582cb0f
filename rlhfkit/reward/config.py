"""The reward model's config and loss: TRL's ``RewardConfig`` plus InstructGPT's K-wise loss for ranking data.

InstructGPT (Ouyang et al. 2022, section 3.5) had labelers rank K = 4..9 responses per prompt and trained the
reward model on all C(K, 2) comparisons of a prompt *as one batch element*:

    loss(theta) = -1 / C(K, 2) * E_{(x, y_w, y_l) ~ D} [ log sigma(r(x, y_w) - r(x, y_l)) ]

Each response is scored once (K forward passes instead of 2 per pair: K(K-1) for the pairwise expansion), and each
prompt weighs the same however many comparisons it has -- InstructGPT reports this is both much cheaper and
overfits less than shuffling the pairs into the dataset.

Here a ranking is the set of pairs that share a ``group`` id (what :func:`rlhfkit.data.from_rankings` and
:func:`rlhfkit.data.from_scores` write): :func:`group_pairs` collects each group's distinct responses and its
comparisons, so tied ranks (pairs dropped as ties) and partial orders are respected, and the per-group mean runs
over the comparisons the group really has. An optional ``margin`` column is subtracted per pair as TRL does.

* :class:`RewardConfig` -- ``trl.RewardConfig`` plus ``group_rankings`` (default: on for data with a ``group``
  column) and the ensemble's ``ensemble_size`` / ``ensemble_bootstrap`` (:mod:`rlhfkit.reward.ensemble`: how an
  ensemble is saved);
* :func:`ranking_loss` -- the loss on hand-made tensors;
* :func:`group_pairs`, :func:`tokenize_group`, :func:`uses_rankings` -- the rankings' rows;
  :class:`rlhfkit.reward.trainer.RankingCollator` and :class:`rlhfkit.reward.trainer.RewardTrainer` are TRL's trainer
  with that collator and loss (pair datasets -- no ``group`` column, or ``group_rankings=False`` -- go through TRL's
  own collator and loss unchanged); :func:`rlhfkit.reward.trainer.run_reward` trains every reward model with it.

Soft labels (``soft_labels``): a pair may carry ``p``, the probability that ``chosen`` is better (a judge's, after
Lee et al. 2023, "RLAIF", arXiv:2309.00267, distilled RLAIF); the loss is then the cross-entropy against it,
``-(p log sigma(d) + (1 - p) log sigma(-d))`` with ``d = r(x, y_chosen) - r(x, y_rejected)``
(:func:`rlhfkit.reward.loss.soft_label_loss`); ``p = 1`` is the hard label, TRL's loss. Soft labels apply to pairwise
rows only: a ranking's pairs are orderings (the K-wise loss), and a ``margin`` states the strength of a preference
too, so neither is combined with ``p`` (a one-line error names the fix).

Deliberately omitted: InstructGPT's normalisation of the final reward (rm_eval measures mean and std, and the RL
stages normalise with them) and any re-weighting of prompts by K.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import trl

from rlhfkit.core.errors import raise_problems
from rlhfkit.core.rules import Range, config_problems


@dataclass
class RewardConfig(trl.RewardConfig):
    """TRL's ``RewardConfig`` plus:

    group_rankings (`bool` or `None`, defaults to `None`): train on rankings with InstructGPT's K-wise loss: the pairs
        sharing a ``group`` id (one prompt's ranking) form one batch element, each response is scored once and the
        loss is averaged over the group's pairs; ``per_device_train_batch_size`` then counts rankings, not pairs.
        `None`: on when the training data has a ``group`` column (ranking data), else off. `False`: every pair is
        its own element (TRL's pairwise loss).
    ensemble_size (`int`, defaults to `1`): reward models trained (members); member k uses ``seed + k``. With
        ``lora`` / ``qlora`` they are adapters + heads on one base.
    ensemble_bootstrap (`bool`, defaults to `False`): train each member on a bootstrap resample of the pairs (as many
        pairs, drawn with replacement), not only in another order.
    soft_labels (`bool`, defaults to `False`): train on each pair's probability ``p`` that ``chosen`` is better (a
        ``p`` column in [0, 1], e.g. a judge's): the cross-entropy ``-(p log sigma(d) + (1 - p) log sigma(-d))``; a row
        whose ``p`` is missing is a hard label (``p = 1``). Pairwise rows only: not with ``group_rankings=True``,
        ranking data or a ``margin`` column. `False`: ``p`` is ignored.
    """

    group_rankings: bool | None = field(
        default=None,
        metadata={
            "help": "InstructGPT's K-wise loss: each ranking (pairs sharing a 'group' id) is one batch element, each "
            "response scored once, loss averaged over its pairs. None: on for data with a 'group' column."
        },
    )
    ensemble_size: int = field(
        default=1,
        metadata={"help": "Reward models trained (seeds seed..seed+K-1); >1 gives RL the members' disagreement."},
    )
    ensemble_bootstrap: bool = field(
        default=False, metadata={"help": "Train each member on a bootstrap resample of the pairs."}
    )

    soft_labels: bool = field(
        default=False,
        metadata={
            "help": "Train on each pair's probability 'p' that chosen is better (cross-entropy on soft labels, Lee et "
            "al. 2023); pairwise rows only (not with rankings or a 'margin' column)."
        },
    )

    RANGES: ClassVar[dict[str, Range]] = {"ensemble_size": Range(1, example="4")}  # 1: a single reward model

    def __post_init__(self):
        super().__post_init__()
        problems = config_problems(self)
        if self.soft_labels and self.group_rankings:
            problems.append(
                "soft_labels=True with group_rankings=True: soft labels apply to pairwise rows, the K-wise loss to "
                "rankings; set group_rankings to false (or null) or soft_labels to false"
            )
        raise_problems(problems)
