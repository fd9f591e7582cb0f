"""rlhfkit's subclasses of TRL's trainers: the one module that imports the trainers themselves.

TRL's trainer modules import peft, datasets and the rest of the training stack (seconds on a CPU); their configs do
not. So the configs and the math live with their concept (:mod:`rlhfkit.reward`, :mod:`rlhfkit.dpo`) and import
cheaply -- what ``rlhfkit run --check`` needs -- and the trainers live here:

* :class:`RankingCollator`, :class:`RewardTrainer` -- TRL's ``RewardTrainer`` with InstructGPT's K-wise loss for
  ranking data (:mod:`rlhfkit.reward` explains the loss and the grouping);
* :class:`DPOTrainer` -- TRL's ``DPOTrainer`` that also logs KL(policy || reference) on policy samples
  (:mod:`rlhfkit.dpo` explains why).

:mod:`rlhfkit.train` runs them (``run_reward``, ``run_dpo``); PPO's trainer is :mod:`rlhfkit.ppo.trainer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import trl
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

from rlhfkit.errors import DataError
from rlhfkit.reward import GROUP_COLUMNS, group_pairs, ranking_loss, tokenize_group, uses_rankings
from rlhfkit.sampling import generate_ids, sequence_kl, sequence_logprobs


# ----------------------------------------------------------------------------- reward model: K-wise rankings
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


# ----------------------------------------------------------------------------- DPO
class DPOTrainer(trl.DPOTrainer):
    """TRL's ``DPOTrainer`` that also logs KL(policy || reference) on policy samples and the log-ratio drift.

    Every training log (each ``logging_steps``) samples the policy at temperature 1 on the first
    ``args.kl_samples`` training prompts (the same prompts and seed each time, so the series is comparable) and
    measures the KL with :func:`rlhfkit.sampling.sequence_kl`; every process computes the same number.
    """

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        for side in ("chosen", "rejected"):
            values = self._metrics[mode].get(f"rewards/{side}")
            if values:
                logs[f"{prefix}logratios/{side}"] = sum(values) / len(values) / self.beta
        if mode == "train" and "loss" in logs and self.args.kl_samples:
            logs.update(self._sampled_kl())
        super().log(logs, start_time)

    def _sampled_kl(self) -> dict[str, float]:
        from trl.trainer.utils import use_adapter

        tokenizer = self.processing_class
        prompts = self.train_dataset.select(range(min(self.args.kl_samples, len(self.train_dataset))))["prompt_ids"]
        policy = self.accelerator.unwrap_model(self.model)
        samples = generate_ids(
            policy,
            prompts,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            max_new_tokens=self.args.kl_max_new_tokens,
            seed=self.args.seed,
        )
        if self.ref_model is not None:
            kl = sequence_kl(policy, self.accelerator.unwrap_model(self.ref_model), samples).mean
        else:  # LoRA: the reference is the policy with its adapter disabled
            logp = sequence_logprobs(policy, samples.prompt_ids, samples.response_ids)
            with use_adapter(policy, adapter_name=None):
                logp_ref = sequence_logprobs(policy, samples.prompt_ids, samples.response_ids)
            kl = float(np.mean(logp - logp_ref))
        return {
            "objective/kl": kl,
            "completions/mean_length": samples.mean_length(),
            "completions/clipped_ratio": 1.0 - float(np.mean(samples.finished)),
        }
