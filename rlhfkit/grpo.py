"""GRPO's config: TRL's ``GRPOConfig`` with rlhfkit's KL default.

TRL's ``GRPOConfig`` defaults to ``beta=0.0``, which drops the reference model and with it the KL leash to the SFT
model; :class:`GRPOConfig` defaults to :data:`rlhfkit.presets.GRPO_BETA` (the reasoning is there). The pipeline, the
recipe and :func:`grpo_config` all build this class, so the default is set in one place. The training run itself is
:func:`rlhfkit.train.run_grpo`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import trl

from rlhfkit.config import trainer_config
from rlhfkit.presets import GRPO_BETA


@dataclass
class GRPOConfig(trl.GRPOConfig):
    """TRL's ``GRPOConfig`` with ``beta`` defaulting to rlhfkit's KL leash (:data:`rlhfkit.presets.GRPO_BETA`)."""

    beta: float = field(
        default=GRPO_BETA,
        metadata={"help": "KL coefficient to the SFT model (rlhfkit: 0.04, as DeepSeekMath); 0 removes the leash."},
    )


def grpo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> GRPOConfig:
    """A :class:`GRPOConfig` via :func:`rlhfkit.config.trainer_config` (precision, presets, then ``kwargs``)."""
    return trainer_config(GRPOConfig, "grpo", output_dir, preset=preset, gpu=gpu, **kwargs)
