"""InstructGPT's K-wise reward loss on rankings (Ouyang et al. 2022, section 3.5): all C(K, 2) comparisons of a
prompt as one batch element, each response scored once (:func:`ranking_loss`); :func:`group_pairs` and
:func:`tokenize_group` turn the pairs of one ranking (a shared ``group`` id) into that element. The config that turns
it on is :class:`rlhfkit.reward.config.RewardConfig` (``group_rankings``); the trainer that uses it is
:class:`rlhfkit.reward.trainer.RewardTrainer`."""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn.functional as F

from rlhfkit.core.errors import DataError
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
