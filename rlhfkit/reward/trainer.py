"""rlhfkit's subclasses of TRL's trainers: the one module that imports the trainers themselves.

TRL's trainer modules import peft, datasets and the rest of the training stack (seconds on a CPU); their configs do
not. So the configs and the math live with their concept (:mod:`rlhfkit.reward.config`, :mod:`rlhfkit.rl.dpo`) and
import
cheaply -- what ``rlhfkit run --check`` needs -- and the trainers live here:

* :class:`RankingCollator`, :class:`RewardTrainer` -- TRL's ``RewardTrainer`` with InstructGPT's K-wise loss for
  ranking data (:mod:`rlhfkit.reward.config` explains the loss and the grouping);
* :class:`DPOTrainer` -- TRL's ``DPOTrainer`` that also logs KL(policy || reference) on policy samples
  (:mod:`rlhfkit.rl.dpo` explains why).

:mod:`rlhfkit.train` runs them (``run_reward``, ``run_dpo``); PPO's trainer is :mod:`rlhfkit.rl.ppo.trainer`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import trl
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.reward_trainer import DataCollatorForPreference
from trl.trainer.utils import pad

from rlhfkit.core.errors import ConfigError, DataError
from rlhfkit.core.io import write_json
from rlhfkit.core.presets import method_preset
from rlhfkit.models.loading import ADAPTER_SUBDIR, MODEL_SUBDIR, load_reward_model
from rlhfkit.models.scoring import member_score_stats
from rlhfkit.reward.config import RewardConfig
from rlhfkit.reward.ensemble import MEMBER_DIR, EnsembleMember, bootstrap, write_ensemble
from rlhfkit.reward.loss import (
    GROUP_COLUMNS,
    check_soft_labels,
    group_pairs,
    ranking_loss,
    soft_label_loss,
    tokenize_group,
    uses_rankings,
)
from rlhfkit.runs import RunResult, as_dataset, remove_checkpoints, train_and_save

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- reward model: K-wise rankings
@dataclass
class RankingCollator(DataCollatorMixin):
    """Collates tokenized rankings (:data:`GROUP_COLUMNS`) into one padded batch of all their responses.

    Returns ``input_ids`` / ``attention_mask`` ``(N, L)`` (right-padded), ``pair_index`` ``(P, 2)``, ``pair_group``
    ``(P,)`` and, when the rows have margins, ``pair_margin`` ``(P,)``. Pair rows (``chosen_ids`` /
    ``rejected_ids``) are passed to TRL's ``DataCollatorForPreference``; their soft labels, when they have a ``p``
    column, come back as ``p`` ``(B,)`` float (a missing value is 1.0, the hard label).
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "response_ids" not in examples[0]:
            out = DataCollatorForPreference(self.pad_token_id, self.pad_to_multiple_of)(examples)
            if "p" in examples[0]:
                out["p"] = torch.tensor([1.0 if e["p"] is None else e["p"] for e in examples], dtype=torch.float)
            return out
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
    """TRL's ``RewardTrainer`` with InstructGPT's K-wise loss for datasets with a ``group`` column, and the
    cross-entropy on soft labels for pairs with a ``p`` column under ``args.soft_labels``.

    Takes TRL's arguments; :func:`run_reward` uses it for every reward run. A dataset with a ``group``
    column (and ``args.group_rankings`` not False) is regrouped by :func:`group_pairs` and tokenized by
    :func:`tokenize_group`; its batches go through :class:`RankingCollator` and :func:`ranking_loss`, with TRL's
    metrics (``accuracy``, ``margin``, rewards) computed over the pairs. Pairs with a ``p`` column train with
    :func:`soft_label_loss` when ``args.soft_labels`` is set (the same metrics). Any other dataset (e.g. held-out
    pairs without groups) is prepared, collated and scored by TRL unchanged.
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
            soft = ["p"] if getattr(self.args, "soft_labels", False) else []  # else p is dropped with the unused
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", *soft, *GROUP_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        p = inputs.pop("p", None)  # soft labels: the probability that chosen is better
        soft = p is not None and getattr(self.args, "soft_labels", False)
        if "pair_index" not in inputs and not soft:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        if soft:  # pairs: TRL's collator stacks the chosen then the rejected sequences
            inputs["use_cache"] = False
            outputs = model(**inputs)
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = soft_label_loss(chosen - rejected, p).mean()
        else:
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


# ------------------------------------------------------------------------------------------ reward model
def run_reward(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    eval_dataset=None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
) -> RunResult:
    """Reward-model training with :class:`RewardTrainer`: TRL's ``RewardTrainer`` (Bradley-Terry loss
    on chosen vs rejected) plus InstructGPT's K-wise loss on rankings.

    Args:
        model_name_or_path: the SFT model (InstructGPT initialises the reward model from it); a new
            one-output ``score`` head is added.
        train_dataset: TRL preference rows: ``prompt``/``chosen``/``rejected`` (explicit prompt) or
            ``chosen``/``rejected``; an optional ``margin`` column (e.g. a vote margin) enters the loss. Pairs with a
            ``group`` column (rankings: :func:`rlhfkit.data.from_rankings`) train with the K-wise loss, one ranking
            per batch element, unless ``config.group_rankings`` is False. With ``config.soft_labels`` the pairs'
            ``p`` column (the probability that chosen is better) gives the soft-label loss
            (:func:`rlhfkit.reward.loss.check_soft_labels` says what it cannot be combined with).
        config: a :class:`rlhfkit.reward.config.RewardConfig` (``trl.RewardConfig`` plus ``group_rankings`` and the
            ensemble's fields); a plain ``trl.RewardConfig`` works too (rankings then train K-wise, the default).
            ``ensemble_size > 1`` trains that many members (seeds ``seed``, ``seed + 1``, ...; with
            ``ensemble_bootstrap`` each on a bootstrap resample) into ``<output_dir>/member-k/`` and writes
            ``<output_dir>/model/ensemble.json`` (:mod:`rlhfkit.reward.config`). Finished members are kept on a rerun.
        preset: with ``lora`` / ``qlora`` the adapter targets every linear layer and the ``score`` head
            is trained in full (``modules_to_save``).
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the (merged) reward model, or the ensemble's
        ``ensemble.json``; for an ensemble ``metrics`` holds each member's as ``member_k/<name>``.
    """
    method = method_preset(preset, task_type="SEQ_CLS") if isinstance(preset, str) else preset
    cols = ("chosen", "rejected")
    train_dataset = as_dataset(train_dataset, "train_dataset", cols)
    eval_dataset = as_dataset(eval_dataset, "eval_dataset", cols)
    if isinstance(config, RewardConfig) and config.group_rankings and "group" not in train_dataset.column_names:
        raise ConfigError(
            "group_rankings=True needs a 'group' column in the training pairs (one id per prompt's ranking, as "
            "rlhfkit.data.from_rankings writes); give ranking data or set group_rankings to null/false"
        )
    check_soft_labels(config, train_dataset)
    check_soft_labels(config, eval_dataset, "eval_dataset")
    kw = {"trust_remote_code": trust_remote_code, "callbacks": callbacks}
    if getattr(config, "ensemble_size", 1) > 1:
        return _run_reward_ensemble(str(model_name_or_path), train_dataset, config, eval_dataset, method, **kw)
    trainer, tokenizer = _reward_trainer(str(model_name_or_path), train_dataset, config, eval_dataset, method, **kw)
    return train_and_save(trainer, tokenizer, config, "reward", str(model_name_or_path), "reward", eval_dataset)


def _reward_trainer(
    model_name_or_path: str, train_dataset, config, eval_dataset, method, *, trust_remote_code, callbacks
):
    model, tokenizer = load_reward_model(model_name_or_path, method, trust_remote_code=trust_remote_code)
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=method.lora,
        callbacks=callbacks,
    )
    return trainer, tokenizer


STATS_PAIRS = 500  # preference pairs whose responses give each ensemble member's score mean / std


MEMBER_STATS_FILE = "score_stats.json"


def _run_reward_ensemble(model_name_or_path: str, train_dataset, config, eval_dataset, method, **kw) -> RunResult:
    """Train ``config.ensemble_size`` reward models and write the ensemble (see :func:`run_reward`)."""
    import dataclasses
    import json

    from accelerate import PartialState
    from transformers import set_seed

    out = Path(config.output_dir)
    stats_source = eval_dataset if eval_dataset is not None else train_dataset
    stats_rows = stats_source.select(range(min(STATS_PAIRS, len(stats_source)))).to_list()
    members, metrics, history = [], {}, []
    for k in range(config.ensemble_size):
        member_out = out / MEMBER_DIR.format(k=k)
        cfg = dataclasses.replace(config, output_dir=str(member_out), seed=config.seed + k, ensemble_size=1)
        stats_file = member_out / MEMBER_STATS_FILE
        if stats_file.is_file() and (member_out / MODEL_SUBDIR / "config.json").is_file():
            logger.info("reward: ensemble member %d is already trained (%s)", k, member_out)
            saved = json.loads(stats_file.read_text())
        else:
            rows = train_dataset
            if config.ensemble_bootstrap:
                rows = as_dataset(bootstrap(train_dataset.to_list(), config.seed + k), "train_dataset")
            set_seed(cfg.seed)  # the new score head's initialisation differs per member
            trainer, tokenizer = _reward_trainer(model_name_or_path, rows, cfg, eval_dataset, method, **kw)
            result = train_and_save(trainer, tokenizer, cfg, "reward", model_name_or_path, "reward", eval_dataset)
            mean, std = member_score_stats(trainer.model, tokenizer, stats_rows, cfg.max_length)
            saved = {"mean": mean, "std": std, "metrics": result.metrics, "log_history": result.log_history}
            if trainer.accelerator.is_main_process:
                write_json(stats_file, saved)
                remove_checkpoints(member_out)  # a finished member is kept whole: a rerun resumes at the next one
        metrics.update({f"member_{k}/{name}": v for name, v in saved["metrics"].items()})
        history += [{**row, "member": k} for row in saved["log_history"]]
        adapter = member_out / ADAPTER_SUBDIR
        members.append(
            EnsembleMember(
                member_out / MODEL_SUBDIR, adapter if adapter.is_dir() else None, saved["mean"], saved["std"]
            )
        )
    model_dir = out / MODEL_SUBDIR
    if PartialState().is_main_process:
        write_ensemble(model_dir, members, model_name_or_path)
    PartialState().wait_for_everyone()
    return RunResult(trainer="reward", model_dir=model_dir, metrics=metrics, log_history=history)
