"""The reward model's config and trainer: TRL's ``RewardTrainer`` plus InstructGPT's K-wise loss for ranking data.

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
* :class:`RankingCollator`, :class:`RewardTrainer` -- TRL's trainer with that collator and loss; pair
  datasets (no ``group`` column, or ``group_rankings=False``) go through TRL's own collator and loss unchanged.
  :func:`rlhfkit.train.run_reward` trains every reward model with it.

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
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

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


@dataclass
class RankingCollator(DataCollatorMixin):
    """Collates tokenized rankings (:data:`GROUP_COLUMNS`) into one padded batch of all their responses.

    Returns ``input_ids`` / ``attention_mask`` ``(N, L)`` (right-padded), ``pair_index`` ``(P, 2)``, ``pair_group``
    ``(P,)`` and, when the rows have margins, ``pair_margin`` ``(P,)``. Pair rows (``chosen_ids`` /
    ``rejected_ids``) are passed to TRL's ``DataCollatorForPreference``.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "response_ids" not in examples[0]:
            return DataCollatorForPreference(self.pad_token_id, self.pad_to_multiple_of)(examples)
        seqs, pair_index, pair_group, margins = [], [], [], []
        for g, example in enumerate(examples):
            offset = len(seqs)
            seqs.extend(torch.tensor(ids) for ids in example["response_ids"])
            pair_index.extend([offset + win, offset + lose] for win, lose in example["pairs"])
            pair_group.extend([g] * len(example["pairs"]))
            margins.extend(example.get("pair_margins") or [])
        out = {
            "input_ids": pad(seqs, self.pad_token_id, "right", self.pad_to_multiple_of),
            "attention_mask": pad([torch.ones_like(s) for s in seqs], 0, "right", self.pad_to_multiple_of),
            "pair_index": torch.tensor(pair_index, dtype=torch.long),
            "pair_group": torch.tensor(pair_group, dtype=torch.long),
        }
        if margins:
            out["pair_margin"] = torch.tensor(margins, dtype=torch.float)
        return out


def uses_rankings(config, dataset) -> bool:
    """Whether a reward run on ``dataset`` (a ``datasets.Dataset``) trains with the K-wise loss under ``config``: it
    has a ``group`` column and ``config.group_rankings`` is not False (a plain ``trl.RewardConfig``: the default)."""
    grouping = config.group_rankings if isinstance(config, RewardConfig) else None
    return grouping is not False and "group" in dataset.column_names


# ----------------------------------------------------------------------------- the trainer
class RewardTrainer(trl.RewardTrainer):
    """TRL's ``RewardTrainer`` with InstructGPT's K-wise loss for datasets with a ``group`` column.

    Takes TRL's arguments; :func:`rlhfkit.train.run_reward` uses it for every reward run. A dataset with a ``group``
    column (and ``args.group_rankings`` not False) is regrouped by :func:`group_pairs` and tokenized by
    :func:`tokenize_group`; its batches go through :class:`RankingCollator` and :func:`ranking_loss`, with TRL's
    metrics (``accuracy``, ``margin``, rewards) computed over the pairs. Any other dataset (e.g. held-out pairs
    without groups) is prepared, collated and scored by TRL unchanged.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if kwargs.get("data_collator") is None:
            self.data_collator = RankingCollator(self.processing_class.pad_token_id, self.args.pad_to_multiple_of)
        # TRL casts QLoRA's trainable weights (adapters, the score head) to bf16, for bf16 autocast on a GPU. The CPU
        # has no autocast there: fp32 activations would meet a bf16 score head, so they stay in fp32 (tests, laptops).
        if getattr(self.model, "is_loaded_in_4bit", False) and self.accelerator.device.type == "cpu":
            for param in self.model.parameters():
                if param.requires_grad and param.dtype == torch.bfloat16:
                    param.data = param.data.float()

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        from datasets import Dataset

        if "response_ids" in (dataset.column_names or []) or not uses_rankings(args, dataset):
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        rows = group_pairs(dataset.to_list())
        tokenized = [tokenize_group(row, processing_class, args.max_length) for row in rows]
        kept = [row for row in tokenized if row["pairs"]]
        if not kept:
            raise DataError(
                f"{dataset_name} dataset: no ranking has a pair of responses within max_length={args.max_length} "
                "tokens; raise max_length"
            )
        return Dataset.from_list(kept)

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", *GROUP_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "pair_index" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        pair_index, pair_group = inputs.pop("pair_index"), inputs.pop("pair_group")
        margin = inputs.pop("pair_margin", None)
        inputs["use_cache"] = False
        outputs = model(**inputs)
        rewards = outputs.logits.squeeze(-1)
        loss = ranking_loss(rewards, pair_index, pair_group, margin)
        chosen, rejected = rewards[pair_index[:, 0]], rewards[pair_index[:, 1]]
        if self.args.center_rewards_coefficient is not None:
            loss += self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
        self._log_metrics(mode, inputs, outputs.logits, chosen, rejected)
        return (loss, outputs) if return_outputs else loss

    def _log_metrics(self, mode: str, inputs: dict, logits: torch.Tensor, chosen, rejected) -> None:
        """TRL's reward metrics (``num_tokens``, min/mean/max reward, ``accuracy``, ``margin``) over the pairs."""
        if mode == "train":
            num_tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += num_tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            all_rewards = self.accelerator.gather(logits)
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            accuracy = self.accelerator.gather_for_metrics((chosen > rejected).float().mean()).mean().item()
            self._metrics[mode]["accuracy"].append(accuracy)
            margin = self.accelerator.gather_for_metrics((chosen - rejected).mean()).mean().item()
            self._metrics[mode]["margin"].append(margin)
