"""The training stages: build TRL's trainer from TRL's own config + an rlhfkit preset, train, save.

Every stage writes into its ``config.output_dir``:

* ``checkpoint-N/`` -- Trainer checkpoints while training (a rerun resumes from the last one);
* ``model/`` -- the final model and tokenizer, written atomically (built under a temporary name and
  renamed), so a folder named ``model`` is always complete.

**LoRA and the frozen reference.** When a stage trains a LoRA adapter (presets ``lora`` / ``qlora``), the
adapter is *merged* into a 16/32-bit copy of the base (never into 4-bit weights, which would lose
precision) and ``model/`` holds an ordinary full model; the adapter alone is kept in ``adapter/``.
Later stages therefore load the SFT model like any checkpoint: the reward model is initialised from it
(InstructGPT), and the RL stages use it both as the policy's starting point and as the frozen
reference. With ``qlora`` the RL stages quantise the merged SFT model again; the reference is then
that quantised model with the policy's new adapter disabled, the policy is the same base with the
adapter enabled, so the KL is measured against exactly the SFT weights the policy starts from.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
ADAPTER_SUBDIR = "adapter"


@dataclass
class StageResult:
    """What a stage produced.

    Attributes:
        stage: ``sft``, ``reward``, ``grpo`` ...
        model_dir: folder of the final model + tokenizer (``<output_dir>/model``).
        metrics: final training metrics plus, when an eval set was given, ``eval_loss_before`` and
            ``eval_loss`` (SFT) or ``eval_accuracy`` (reward).
        log_history: the Trainer's log history (one dict per logging step).
    """

    stage: str
    model_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ configs
def stage_config(config_cls, stage: str, output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs):
    """Build a TRL config with rlhfkit's precedence: hardware precision < presets < ``kwargs``.

    >>> cfg = stage_config(SFTConfig, "sft", "runs/sft", preset="qlora", gpu=24, learning_rate=1e-4)
    """
    from rlhfkit.models import precision_kwargs
    from rlhfkit.presets import gpu_preset, method_preset

    method = method_preset(preset) if isinstance(preset, str) else preset
    merged: dict[str, Any] = {**precision_kwargs(), **method.trainer_kwargs}
    if gpu is not None:
        merged.update(gpu_preset(gpu, stage))
    merged.update(kwargs)
    fields = set(config_cls.__dataclass_fields__)
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(
            f"unknown {config_cls.__name__} field(s) {unknown}; see `{config_cls.__name__}` in TRL's docs"
        )
    return config_cls(output_dir=str(output_dir), **{k: v for k, v in merged.items() if k in fields})


def as_dataset(data, name: str = "dataset", required: Sequence[str] = ()):
    """A ``datasets.Dataset`` from a Dataset or a list of dicts, checking the ``required`` columns."""
    from datasets import Dataset

    if data is None:
        return None
    if not isinstance(data, Dataset):
        data = Dataset.from_list(list(data))
    if len(data) == 0:
        raise DataError(f"{name} is empty; give at least one row")
    missing = [c for c in required if c not in data.column_names]
    if missing:
        raise DataError(f"{name} lacks column(s) {missing}; it has {data.column_names}")
    return data


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest ``checkpoint-N`` folder in ``output_dir`` (to resume from), or None."""
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if os.path.isdir(output_dir) else None


# ------------------------------------------------------------------------------------------ saving
def save_final(trainer, tokenizer, output_dir: str | os.PathLike, *, base_model: str, model_kind: str) -> Path:
    """Save the trained model to ``<output_dir>/model`` atomically, merging a LoRA adapter if there is one.

    ``model_kind`` is ``causal`` or ``reward``: the class used to reload an unquantised base for merging.
    Only the main process writes; the others wait for it.
    """
    from peft import PeftModel

    from rlhfkit.io import atomic_path

    out = Path(output_dir) / MODEL_SUBDIR
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = trainer.accelerator
    if state.is_main_process:
        if isinstance(model, PeftModel):
            with atomic_path(Path(output_dir) / ADAPTER_SUBDIR) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            merged = merge_adapter(Path(output_dir) / ADAPTER_SUBDIR, base_model, tokenizer, model_kind)
        else:
            merged = model
        with atomic_path(out) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    state.wait_for_everyone()
    return out


def merge_adapter(adapter_dir: str | os.PathLike, base_model: str, tokenizer, model_kind: str = "causal"):
    """Load the base unquantised (compute dtype), apply the adapter, and merge it into the weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rlhfkit.models import compute_dtype, sync_model_with_tokenizer

    cls = AutoModelForCausalLM if model_kind == "causal" else AutoModelForSequenceClassification
    extra = {"num_labels": 1} if model_kind == "reward" else {}
    base = cls.from_pretrained(base_model, dtype=compute_dtype(), **extra)
    sync_model_with_tokenizer(base, tokenizer)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


# ------------------------------------------------------------------------------------------ SFT
def run_sft(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    eval_dataset=None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
) -> StageResult:
    """Supervised fine-tuning with TRL's ``SFTTrainer``.

    Args:
        model_name_or_path: hub id or local folder of the base model.
        train_dataset: rows in any TRL SFT format: ``prompt``/``completion`` (loss on the completion
            only), ``messages`` (conversational) or ``text``. A ``datasets.Dataset`` or a list of dicts.
        config: a ``trl.SFTConfig`` (build one with :func:`stage_config` to get presets and precision).
        eval_dataset: held-out rows; the eval loss is measured before and after training.
        preset: ``full`` | ``lora`` | ``qlora`` or a :class:`~rlhfkit.presets.MethodPreset`.
    Returns:
        a :class:`StageResult` whose ``model_dir`` holds the (merged) SFT model.
    """
    from trl import SFTTrainer

    from rlhfkit.models import load_policy
    from rlhfkit.presets import method_preset

    method = method_preset(preset) if isinstance(preset, str) else preset
    train_dataset = as_dataset(train_dataset, "train_dataset")
    eval_dataset = as_dataset(eval_dataset, "eval_dataset")
    model, tokenizer = load_policy(model_name_or_path, method, trust_remote_code=trust_remote_code)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=method.lora,
        callbacks=callbacks,
    )
    return _train_and_save(trainer, tokenizer, config, "sft", str(model_name_or_path), "causal", eval_dataset)


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
) -> StageResult:
    """Reward-model training with TRL's ``RewardTrainer`` (Bradley-Terry loss on chosen vs rejected).

    Args:
        model_name_or_path: the SFT model (InstructGPT initialises the reward model from it); a new
            one-output ``score`` head is added.
        train_dataset: TRL preference rows: ``prompt``/``chosen``/``rejected`` (explicit prompt) or
            ``chosen``/``rejected``; an optional ``margin`` column (e.g. labeler agreement) enters the loss.
        config: a ``trl.RewardConfig``.
        preset: with ``lora`` / ``qlora`` the adapter targets every linear layer and the ``score`` head
            is trained in full (``modules_to_save``).
    """
    from trl import RewardTrainer

    from rlhfkit.models import load_reward_model
    from rlhfkit.presets import method_preset

    method = method_preset(preset, task_type="SEQ_CLS") if isinstance(preset, str) else preset
    cols = ("chosen", "rejected")
    train_dataset = as_dataset(train_dataset, "train_dataset", cols)
    eval_dataset = as_dataset(eval_dataset, "eval_dataset", cols)
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
    return _train_and_save(trainer, tokenizer, config, "reward", str(model_name_or_path), "reward", eval_dataset)


def _train_and_save(trainer, tokenizer, config, stage, base_model, model_kind, eval_dataset) -> StageResult:
    metrics: dict[str, float] = {}
    if eval_dataset is not None:
        before = trainer.evaluate()
        metrics.update({f"{k}_before": v for k, v in before.items() if k.startswith("eval_") and "runtime" not in k})
    resume = last_checkpoint(config.output_dir) if config.resume_from_checkpoint is None else None
    if resume:
        logger.info("%s: resuming from %s", stage, resume)
    out = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint or resume)
    metrics.update(out.metrics)
    if eval_dataset is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if "runtime" not in k})
    model_dir = save_final(trainer, tokenizer, config.output_dir, base_model=base_model, model_kind=model_kind)
    return StageResult(stage=stage, model_dir=model_dir, metrics=metrics, log_history=list(trainer.state.log_history))


def remove_checkpoints(output_dir: str | os.PathLike) -> None:
    """Delete ``checkpoint-N`` folders once a stage's final model is saved (they can be large)."""
    for path in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)
