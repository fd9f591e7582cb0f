"""InstructGPT's K-wise reward loss on rankings (Ouyang et al. 2022, section 3.5): all C(K, 2) comparisons of a
prompt as one batch element, each response scored once (:func:`ranking_loss`); :func:`group_pairs` and
:func:`tokenize_group` turn the pairs of one ranking (a shared ``group`` id) into that element. The config that turns
it on is :class:`rlhfkit.reward.config.RewardConfig` (``group_rankings``); the trainer that uses it is
:class:`rlhfkit.reward.trainer.RewardTrainer`. :func:`soft_label_loss` is the pairwise loss on soft labels (Lee et al.
2023), for pairs that carry the probability that ``chosen`` is better (``soft_labels``)."""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.models.scoring import tokenize_pair
from rlhfkit.reward.config import RewardConfig

GROUP_COLUMNS = ("response_ids", "pairs", "pair_margins")  # a tokenized group row (pair_margins optional)


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


def soft_label_loss(diff: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on soft labels (Lee et al. 2023, "RLAIF", arXiv:2309.00267: distilled RLAIF), per pair:
    ``-(p log sigmoid(d) + (1 - p) log sigmoid(-d))``.

    Args:
        diff: ``(P,)`` the reward difference ``d = r_chosen - r_rejected`` of each pair.
        p: ``(P,)`` the probability that ``chosen`` is better, in [0, 1]; ``p = 1`` gives ``-log sigmoid(d)``, the
            hard-label (Bradley-Terry) loss of TRL's ``RewardTrainer``.
    Returns:
        ``(P,)`` the loss of each pair; its minimum over ``d`` is at ``sigmoid(d) = p``.
    """
    return F.binary_cross_entropy_with_logits(diff, p.to(diff.dtype), reduction="none")


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
    (:func:`rlhfkit.models.scoring.tokenize_pair`); responses longer than ``max_length`` are dropped with their pairs
    (as TRL drops such pairs), which may leave a group without pairs."""
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


def check_soft_labels(config, dataset, name: str = "train_dataset") -> None:
    """Raise unless ``dataset`` (a ``datasets.Dataset`` or None) can train with ``config.soft_labels``: the training
    pairs have a ``p`` column, no ``margin`` column and no rankings trained K-wise, and every ``p`` is a probability
    (None: a hard label). Nothing to check without ``soft_labels``."""
    if not getattr(config, "soft_labels", False) or dataset is None:
        return
    columns = dataset.column_names
    if "p" not in columns:
        if name == "train_dataset":
            raise ConfigError(
                "soft_labels=True needs a 'p' column in the training pairs (the probability that 'chosen' is better, "
                "e.g. a judge's); give such pairs or set soft_labels to false"
            )
        return
    if "margin" in columns:
        raise ConfigError(
            f"soft_labels=True and {name} has a 'margin' column as well as 'p': both say how strongly 'chosen' is "
            "preferred; drop the margin (votes: ties='drop') or set soft_labels to false"
        )
    if uses_rankings(config, dataset):
        raise ConfigError(
            f"soft_labels=True and {name} holds rankings (a 'group' column): soft labels apply to pairwise rows; set "
            "group_rankings to false to train the pairs one by one, or soft_labels to false"
        )
    for i, value in enumerate(dataset["p"]):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (number and 0 <= value <= 1):
            raise DataError(
                f"{name}: pair {i}: p={value!r} is not a probability in [0, 1] (that 'chosen' is better); fix the "
                "value, or write null for a hard label"
            )
