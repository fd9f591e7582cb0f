"""The RL algorithms' configs (GRPO, RLOO, DPO, best-of-N); this module imports no trainer, so checking a config
never loads a training stack. PPO's config is :mod:`rlhfkit.rl.ppo.config`; the registry that names each algorithm's
config and run is :mod:`rlhfkit.rl.algorithms`.

* :class:`GRPOConfig` -- TRL's ``GRPOConfig`` defaults to ``beta=0.0``, which drops the reference model and with it
  the KL leash to the SFT model; this one defaults to :data:`rlhfkit.core.presets.GRPO_BETA` (the reasoning is there).
* :class:`RLOOConfig` -- RLOO (REINFORCE Leave-One-Out; Kool et al. 2019, Ahmadian et al. 2024) gives each prompt
  ``num_generations`` completions (k); a completion's advantage is its reward minus the mean reward of the other
  k - 1. It subtracts ``beta * sum_t log(pi / pi_ref)`` (a per-sequence estimate) from each reward before the
  baseline, where GRPO adds a per-token KL term to the loss: RLOO's ``beta`` is in units of the reward per nat, so
  normalise the reward model's scores (``reward_mean`` / ``reward_std`` from rm_eval). TRL's default ``beta=0.05``
  is named as :data:`rlhfkit.core.presets.RLOO_BETA`.
* :class:`DPOConfig` -- TRL's ``DPOConfig`` plus the sampled KL to the SFT model that the monitors read.
* :class:`BestOfNConfig` -- rejection-sampling fine-tuning: rounds of N samples per prompt, the reward model's
  favourite kept, TRL's ``SFTConfig`` fields for the fine-tuning.

``grpo_config`` / ``rloo_config`` / ``dpo_config`` / ``best_of_n_config`` build each with rlhfkit's precision and
presets (:func:`rlhfkit.core.arguments.trainer_config`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar

import trl

from rlhfkit.core.arguments import trainer_config
from rlhfkit.core.errors import ConfigError, raise_problems
from rlhfkit.core.presets import DPO_KL_MAX_NEW_TOKENS, DPO_KL_SAMPLES, GRPO_BETA, RLOO_BETA
from rlhfkit.core.rules import AT_LEAST_ONE, POSITIVE, Range, config_problems


@dataclass
class GRPOConfig(trl.GRPOConfig):
    """TRL's ``GRPOConfig`` with ``beta`` defaulting to rlhfkit's KL leash (:data:`rlhfkit.core.presets.GRPO_BETA`)."""

    beta: float = field(
        default=GRPO_BETA,
        metadata={"help": "KL coefficient to the SFT model (rlhfkit: 0.04, as DeepSeekMath); 0 removes the leash."},
    )


def grpo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> GRPOConfig:
    """A :class:`GRPOConfig` via :func:`rlhfkit.core.arguments.trainer_config` (precision, presets, then
    ``kwargs``)."""
    return trainer_config(GRPOConfig, "grpo", output_dir, preset=preset, gpu=gpu, **kwargs)


@dataclass
class RLOOConfig(trl.RLOOConfig):
    """TRL's ``RLOOConfig`` with ``beta`` defaulting to :data:`rlhfkit.core.presets.RLOO_BETA` (TRL's value, named
    once)."""

    beta: float = field(
        default=RLOO_BETA,
        metadata={"help": "KL penalty per nat of sequence KL, subtracted from the reward (0 removes the leash)."},
    )


def rloo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> RLOOConfig:
    """A :class:`RLOOConfig` via :func:`~rlhfkit.core.arguments.trainer_config` (precision, presets, ``kwargs``)."""
    return trainer_config(RLOOConfig, "rloo", output_dir, preset=preset, gpu=gpu, **kwargs)


@dataclass
class DPOConfig(trl.DPOConfig):
    """TRL's ``DPOConfig`` plus the policy samples that measure DPO's KL to the reference for the monitors.

    Args:
        kl_samples (`int`, defaults to `32`): training prompts the policy is sampled on at every log to measure
            ``objective/kl`` (nats per sequence); 0 turns it off (the monitors' KL, length and truncation signals too).
            The default is :data:`rlhfkit.core.presets.DPO_KL_SAMPLES` (the planner counts its generation).
        kl_max_new_tokens (`int`, defaults to `128`): tokens sampled per response for that measurement.
    """

    kl_samples: int = field(
        default=DPO_KL_SAMPLES,
        metadata={"help": "Prompts sampled at every log to measure KL to the reference (0: off)."},
    )
    kl_max_new_tokens: int = field(
        default=DPO_KL_MAX_NEW_TOKENS, metadata={"help": "Tokens sampled per response for the KL."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kl_samples < 0 or self.kl_max_new_tokens < 1:
            raise ConfigError(
                f"DPOConfig: kl_samples={self.kl_samples} must be >= 0 and kl_max_new_tokens={self.kl_max_new_tokens} "
                ">= 1"
            )


def dpo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> DPOConfig:
    """A :class:`DPOConfig` via :func:`rlhfkit.core.arguments.trainer_config` (precision, presets, then ``kwargs``)."""
    return trainer_config(DPOConfig, "dpo", output_dir, preset=preset, gpu=gpu, **kwargs)


# ------------------------------------------------------------------------------------------ rejection sampling
@dataclass
class BestOfNConfig(trl.SFTConfig):
    """Rejection-sampling fine-tuning: TRL's ``SFTConfig`` (the fine-tuning of each round) plus the sampling.

    Args:
        rounds (`int`, defaults to `3`): sample -> keep the best -> fine-tune, this many times.
        num_samples (`int`, defaults to `8`): N, responses sampled per prompt; the reward model keeps one.
        prompts_per_round (`int` or `None`, defaults to `None`): prompts sampled each round (None: all); rounds
            take consecutive slices of the prompts, wrapping around.
        max_completion_length (`int`, defaults to `256`): tokens sampled per response.
        temperature (`float`, defaults to `1.0`): sampling temperature (1.0: the policy itself).
        generation_batch_size (`int`, defaults to `64`): sequences per generation call.

    ``max_steps`` / ``num_train_epochs``, ``learning_rate`` and the other ``SFTConfig`` fields apply to each round's
    fine-tuning, which starts from the previous round's policy.
    """

    rounds: int = field(default=3, metadata={"help": "Rounds of sample -> keep the best -> fine-tune."})
    num_samples: int = field(default=8, metadata={"help": "N: responses sampled per prompt, the best one kept."})
    prompts_per_round: int | None = field(
        default=None, metadata={"help": "Prompts sampled per round (None: all); consecutive slices, wrapping."}
    )
    max_completion_length: int = field(default=256, metadata={"help": "Tokens sampled per response."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (1.0: the policy itself)."})
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences per generation call."})

    RANGES: ClassVar[dict[str, Range]] = {
        "rounds": AT_LEAST_ONE,
        "num_samples": AT_LEAST_ONE,
        "prompts_per_round": AT_LEAST_ONE,
        "max_completion_length": AT_LEAST_ONE,
        "temperature": POSITIVE,
        "generation_batch_size": AT_LEAST_ONE,
    }

    def __post_init__(self):
        super().__post_init__()
        raise_problems(config_problems(self))


def best_of_n_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs) -> BestOfNConfig:
    """A :class:`BestOfNConfig` via :func:`~rlhfkit.core.arguments.trainer_config` (precision, presets, ``kwargs``)."""
    return trainer_config(BestOfNConfig, "best_of_n", output_dir, preset=preset, gpu=gpu, **kwargs)
