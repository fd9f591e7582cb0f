"""RLOO's config: TRL's ``RLOOConfig``, built with rlhfkit's presets and precision.

RLOO (REINFORCE Leave-One-Out; Kool et al. 2019, Ahmadian et al. 2024) is REINFORCE with a baseline that costs no
value model: each prompt gets ``num_generations`` completions (k), and a completion's advantage is its reward minus
the mean reward of the other k - 1. Beside GRPO (:mod:`rlhfkit.grpo`), TRL 1.16's two trainers differ in how they
leash the policy and scale the signal:

* KL: RLOO subtracts ``beta * sum_t log(pi / pi_ref)`` (a first-order, per-sequence estimate) from each reward
  before the baseline; GRPO adds a per-token KL term to the loss. RLOO's ``beta`` is therefore in units of the
  reward per nat of sequence KL: normalise the reward model's scores (``reward_mean`` / ``reward_std`` from rm_eval)
  so it means the same on every reward model.
* Scale: RLOO's advantages keep the reward's units (``normalize_advantages`` rescales them per batch); GRPO divides
  by each group's standard deviation.

TRL's default ``beta=0.05`` keeps the leash on (unlike its GRPO default of 0); :class:`RLOOConfig` names it as
rlhfkit's default (:data:`rlhfkit.presets.RLOO_BETA`, which the planner reads too). The training run itself is
:func:`rlhfkit.train.run_rloo` (the reward model scored as trained, presets, monitors, merged save).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import trl

from rlhfkit.config import trainer_config
from rlhfkit.presets import RLOO_BETA


@dataclass
class RLOOConfig(trl.RLOOConfig):
    """TRL's ``RLOOConfig`` with ``beta`` defaulting to :data:`rlhfkit.presets.RLOO_BETA` (TRL's value, named once)."""

    beta: float = field(
        default=RLOO_BETA,
        metadata={"help": "KL penalty per nat of sequence KL, subtracted from the reward (0 removes the leash)."},
    )


def rloo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> RLOOConfig:
    """A :class:`RLOOConfig` via :func:`rlhfkit.config.trainer_config` (precision, presets, then ``kwargs``)."""
    return trainer_config(RLOOConfig, "rloo", output_dir, preset=preset, gpu=gpu, **kwargs)
