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
  column) and the ensemble's ``ensemble_size`` / ``ensemble_bootstrap`` (:mod:`rlhfkit.ensemble`: how an
  ensemble is saved);
* :func:`ranking_loss` -- the loss on hand-made tensors;
* :func:`group_pairs`, :func:`tokenize_group`, :func:`uses_rankings` -- the rankings' rows;
  :class:`rlhfkit.trainers.RankingCollator` and :class:`rlhfkit.trainers.RewardTrainer` are TRL's trainer with that
  collator and loss (pair datasets -- no ``group`` column, or ``group_rankings=False`` -- go through TRL's own
  collator and loss unchanged); :func:`rlhfkit.train.run_reward` trains every reward model with it.

Deliberately omitted: InstructGPT's normalisation of the final reward (rm_eval measures mean and std, and the RL
stages normalise with them) and any re-weighting of prompts by K.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import trl

from rlhfkit.errors import DataError, raise_problems
from rlhfkit.rules import Range, config_problems
from rlhfkit.scoring import tokenize_pair

GROUP_COLUMNS = ("response_ids", "pairs", "pair_margins")  # a tokenized group row (pair_margins optional)


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

    RANGES: ClassVar[dict[str, Range]] = {"ensemble_size": Range(1, example="4")}  # 1: a single reward model

    def __post_init__(self):
        super().__post_init__()
        raise_problems(config_problems(self))


# ----------------------------------------------------------------------------- the loss
def ranking_loss(
    rewards: torch.Tensor,
    pair_index: torch.Tensor,
    pair_group: torch.Tensor,
    margin: torch.Tensor | None = None,
) -> torch.Tensor:
    """InstructGPT's K-wise loss: per group, the mean over its pairs of ``-log sigmoid(r_w - r_l - margin)``; then the
    mean over groups.

    Args:
        rewards: ``(N,)`` the score of every response in the batch.
        pair_index: ``(P, 2)`` long, ``[winner, loser]`` indices into ``rewards``.
        pair_group: ``(P,)`` long, the group (0..G-1) of each pair; every group has at least one pair.
        margin: ``(P,)`` or None, subtracted from each pair's reward difference (TRL's ``margin``).
    Returns:
        a scalar tensor. With one pair per group it equals TRL's pairwise loss (the mean over pairs).
    """
    diff = rewards[pair_index[:, 0]] - rewards[pair_index[:, 1]]
    if margin is not None:
        diff = diff - margin
    per_pair = -F.logsigmoid(diff)
    n_groups = int(pair_group.max()) + 1
    sums = per_pair.new_zeros(n_groups).index_add(0, pair_group, per_pair)
    counts = per_pair.new_zeros(n_groups).index_add(0, pair_group, torch.ones_like(per_pair))
    return (sums / counts).mean()


# ----------------------------------------------------------------------------- data
def _key(text: str | list) -> str:
    return text if isinstance(text, str) else json.dumps(text, sort_keys=True)


def group_pairs(rows: list[dict]) -> list[dict]:
    """Pairs with a ``group`` column -> one row per group: ``{"prompt", "responses", "pairs", ["pair_margins"]}``.

    ``responses`` are the group's distinct responses in order of first appearance; ``pairs`` are ``[winner, loser]``
    indices into them, one per input pair; ``pair_margins`` the pairs' ``margin`` values when the rows have one.
    Groups are numbered in order of first appearance. Raises DataError when a group's pairs have different prompts.
    """
    groups: dict[Any, dict] = {}
    for i, row in enumerate(rows):
        g = groups.setdefault(row["group"], {"prompt": row["prompt"], "responses": [], "pairs": [], "index": {}})
        if _key(g["prompt"]) != _key(row["prompt"]):
            raise DataError(
                f"pair {i}: group {row['group']!r} holds two prompts; a group is one prompt's ranking (regroup the "
                "pairs by prompt, or set group_rankings=False to train on independent pairs)"
            )
        ids = []
        for side in ("chosen", "rejected"):
            key = _key(row[side])
            if key not in g["index"]:
                g["index"][key] = len(g["responses"])
                g["responses"].append(row[side])
            ids.append(g["index"][key])
        g["pairs"].append(ids)
        if "margin" in row:
            g.setdefault("pair_margins", []).append(float(row["margin"]))
    return [{k: v for k, v in g.items() if k != "index"} for g in groups.values()]


def tokenize_group(row: dict, tokenizer, max_length: int | None) -> dict:
    """``response_ids`` of a :func:`group_pairs` row, each prompt + response tokenized as ``RewardTrainer`` does
    (:func:`rlhfkit.scoring.tokenize_pair`); responses longer than ``max_length`` are dropped with their pairs (as
    TRL drops such pairs), which may leave a group without pairs."""
    ids = [tokenize_pair(tokenizer, {**row, "chosen": r, "rejected": r})[0] for r in row["responses"]]
    fits = [max_length is None or len(x) <= max_length for x in ids]
    new_index = {old: new for new, old in enumerate(i for i, ok in enumerate(fits) if ok)}
    keep = [p for p in range(len(row["pairs"])) if all(fits[i] for i in row["pairs"][p])]
    out = {
        "response_ids": [x for x, ok in zip(ids, fits) if ok],
        "pairs": [[new_index[i] for i in row["pairs"][p]] for p in keep],
    }
    if "pair_margins" in row:
        out["pair_margins"] = [row["pair_margins"][p] for p in keep]
    return out


def uses_rankings(config, dataset) -> bool:
    """Whether a reward run on ``dataset`` (a ``datasets.Dataset``) trains with the K-wise loss under ``config``: it
    has a ``group`` column and ``config.group_rankings`` is not False (a plain ``trl.RewardConfig``: the default)."""
    grouping = config.group_rankings if isinstance(config, RewardConfig) else None
    return grouping is not False and "group" in dataset.column_names
