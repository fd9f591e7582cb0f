"""InstructGPT's step 1: supervised fine-tuning on demonstrations (TRL's ``SFTTrainer``), :func:`run_sft`.

**LoRA and the frozen reference.** When a run trains a LoRA adapter (presets ``lora`` / ``qlora``), the adapter is
*merged* into a 16/32-bit copy of the base (never into 4-bit weights, which would lose precision) and ``model/`` holds
an ordinary full model; the adapter alone is kept in ``adapter/``. Later stages load the SFT model like any
checkpoint: the reward model is initialised from it (InstructGPT), and the RL stages use it both as the policy's
starting point and as the frozen reference.
"""

from __future__ import annotations

import logging
import os

from rlhfkit.core.presets import method_preset
from rlhfkit.models.loading import (
    load_policy,
)
from rlhfkit.runs import RunResult, as_dataset, train_and_save

logger = logging.getLogger(__name__)


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
) -> RunResult:
    """Supervised fine-tuning with TRL's ``SFTTrainer``.

    Args:
        model_name_or_path: hub id or local folder of the base model.
        train_dataset: rows in any TRL SFT format: ``prompt``/``completion`` (loss on the completion
            only), ``messages`` (conversational) or ``text``. A ``datasets.Dataset`` or a list of dicts.
        config: a ``trl.SFTConfig`` (build one with :func:`stage_config` to get presets and precision).
        eval_dataset: held-out rows; the eval loss is measured before and after training.
        preset: ``full`` | ``lora`` | ``qlora`` or a :class:`~rlhfkit.core.presets.MethodPreset`.
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the (merged) SFT model.
    """
    from trl import SFTTrainer

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
    return train_and_save(trainer, tokenizer, config, "sft", str(model_name_or_path), "causal", eval_dataset)
