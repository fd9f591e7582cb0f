"""GRPO and RLOO: TRL's ``GRPOTrainer`` / ``RLOOTrainer`` against rlhfkit's reward-model scorer, with the monitors
and the healthy model returned after a stop (:func:`run_grpo`, :func:`run_rloo`; one implementation,
:func:`_run_sampling_rl`). Their configs are in :mod:`rlhfkit.rl.configs`."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.presets import GRPO_BETA, method_preset
from rlhfkit.models.scoring import (
    RewardModelScorer,
    load_reward_function,
    place_reward_function,
)
from rlhfkit.rl.healthy import load_start_policy, train_monitored
from rlhfkit.runs import RunResult, prompt_dataset

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ GRPO and RLOO
def _reward_function(reward_model, reward_tokenizer, method, trust_remote_code: bool, ensemble: dict, norm: dict):
    """GRPO's / RLOO's reward-model function: a folder (one model or an ensemble) loaded as RL uses it, or a loaded
    model."""
    if isinstance(reward_model, str | os.PathLike):
        return load_reward_function(reward_model, method, trust_remote_code=trust_remote_code, **ensemble, **norm)
    if reward_tokenizer is None:
        raise ConfigError("reward_tokenizer is required when reward_model is a loaded model; pass its tokenizer")
    return RewardModelScorer(reward_model, reward_tokenizer, **norm)


def run_grpo(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    reward_model=None,
    reward_tokenizer=None,
    reward_funcs=None,
    reward_weights: Sequence[float] | None = None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    monitor_config=None,
    reward_mean: float | None = None,
    reward_std: float | None = None,
    reward_aggregation: str = "mean",
    reward_ensemble_coef: float = 1.0,
    reference_model: str | os.PathLike | None = None,
    start_adapter: str | os.PathLike | None = None,
    start_model: str | os.PathLike | None = None,
) -> RunResult:
    """RL against the reward model with TRL's ``GRPOTrainer`` (group-relative advantages, KL to the SFT model).

    :func:`run_rloo` takes the same arguments (both signatures are kept identical on purpose).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and the frozen reference (unless
            ``reference_model`` says otherwise).
        train_dataset: rows with a ``prompt`` column (text, or a list of chat messages); a plain list of
            prompt strings is accepted too. Other columns are passed to ``reward_funcs`` as keyword arguments.
        config: a ``trl.GRPOConfig``; build it with :func:`grpo_config` (presets, precision, ``beta=0.04``).
            ``beta == 0`` logs a warning: no reference model, no KL leash.
        reward_model: folder of a trained reward model or ensemble (``run_reward``'s ``model_dir``) or a loaded
            ``AutoModelForSequenceClassification``; scored by :class:`RewardModelScorer` exactly as
            ``RewardTrainer`` trained it (an ensemble: :class:`~rlhfkit.models.scoring.EnsembleScorer`, which also logs
            the members' spread as ``rewards/ensemble_std/mean``). With the ``qlora`` preset it is loaded in 4 bits.
        reward_tokenizer: the reward model's tokenizer; loaded from ``reward_model`` when it is a folder.
        reward_funcs: one or a list of extra rule-based reward functions, TRL's signature
            ``f(prompts, completions, completion_ids, **columns) -> list[float]``.
        reward_weights: one weight per reward function, the reward model first; used instead of
            ``config.reward_weights`` (default: all 1.0). The caller's config is not changed.
        preset: ``full`` | ``lora`` | ``qlora``. With LoRA the reference is the policy with its adapter
            disabled (TRL does this), so no second copy of the model is loaded.
        callbacks: extra ``TrainerCallback``s; rlhfkit's KL-health / reward-hacking monitors are always added
            (:func:`rlhfkit.monitors.build_monitors`): alerts are logged, ``stop`` alerts end training with a
            checkpoint, the timeline is saved to ``<output_dir>/health.jsonl`` with PNG plots, and the reference
            and reward models are checked bit-identical at the end.
        monitor_config: a :class:`rlhfkit.monitors.MonitorConfig` (default: ``MonitorConfig()``).
        reward_mean, reward_std: normalise the reward model's score as ``(score - mean) / std``.
        reward_aggregation, reward_ensemble_coef: how an ensemble's members make one reward, ``mean`` | ``min`` |
            ``mean_minus_std`` (:func:`rlhfkit.models.scoring.aggregate_rewards`); ignored for one reward model.
        reference_model: the frozen reference (the KL leash) when it is not the starting policy: iterative RLHF's
            round r starts from round r-1's policy and keeps the SFT model here (full fine-tuning only: a LoRA
            policy's reference is its own start with the adapter turned off).
        start_adapter, start_model: LoRA presets: a trained adapter (``<run>/adapter``) to train further on
            ``model_name_or_path``, which stays the reference (the adapter turned off) -- iterative RLHF's round r
            under LoRA: the SFT model plus round r-1's adapter; ``start_model`` is that policy saved (round r-1's
            ``model/``), what a stop before any healthy checkpoint returns.
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the (merged) policy -- after a stop alert, the average of
        the last healthy checkpoints; ``metrics`` says so (:func:`return_healthy`: ``monitor_alerts``,
        ``stop_step``, ``last_healthy_step``, ``returned_step``, ``averaged_steps``, ``returned_reason``).
    """
    from trl import GRPOTrainer

    return _run_sampling_rl(
        GRPOTrainer,
        "grpo",
        model_name_or_path,
        train_dataset,
        config,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_funcs=reward_funcs,
        reward_weights=reward_weights,
        preset=preset,
        trust_remote_code=trust_remote_code,
        callbacks=callbacks,
        monitor_config=monitor_config,
        reward_mean=reward_mean,
        reward_std=reward_std,
        reward_aggregation=reward_aggregation,
        reward_ensemble_coef=reward_ensemble_coef,
        reference_model=reference_model,
        start_adapter=start_adapter,
        start_model=start_model,
    )


def run_rloo(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    reward_model=None,
    reward_tokenizer=None,
    reward_funcs=None,
    reward_weights: Sequence[float] | None = None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    monitor_config=None,
    reward_mean: float | None = None,
    reward_std: float | None = None,
    reward_aggregation: str = "mean",
    reward_ensemble_coef: float = 1.0,
    reference_model: str | os.PathLike | None = None,
    start_adapter: str | os.PathLike | None = None,
    start_model: str | os.PathLike | None = None,
) -> RunResult:
    """RL against the reward model with TRL's ``RLOOTrainer`` (REINFORCE with a leave-one-out baseline).

    Each prompt gets ``num_generations`` completions; a completion's advantage is its reward minus the mean reward
    of the *other* completions of its prompt (:mod:`rlhfkit.rl.configs`). The KL to the SFT model is a per-sequence
    penalty in the reward (``reward - beta * sum_t log(pi / pi_ref)``), so ``beta`` is in units of the reward: pass
    ``reward_mean`` / ``reward_std`` (from rm_eval) to put it in units of the reward model's spread. Arguments,
    monitors and the result are those of :func:`run_grpo`; ``config`` is a ``trl.RLOOConfig``
    (:func:`rlhfkit.rl.configs.rloo_config`).
    """
    from trl import RLOOTrainer

    return _run_sampling_rl(
        RLOOTrainer,
        "rloo",
        model_name_or_path,
        train_dataset,
        config,
        reward_model=reward_model,
        reward_tokenizer=reward_tokenizer,
        reward_funcs=reward_funcs,
        reward_weights=reward_weights,
        preset=preset,
        trust_remote_code=trust_remote_code,
        callbacks=callbacks,
        monitor_config=monitor_config,
        reward_mean=reward_mean,
        reward_std=reward_std,
        reward_aggregation=reward_aggregation,
        reward_ensemble_coef=reward_ensemble_coef,
        reference_model=reference_model,
        start_adapter=start_adapter,
        start_model=start_model,
    )


def _run_sampling_rl(
    trainer_cls,
    name: str,
    model_name_or_path,
    train_dataset,
    config,
    *,
    reward_model=None,
    reward_tokenizer=None,
    reward_funcs=None,
    reward_weights: Sequence[float] | None = None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    monitor_config=None,
    reward_mean: float | None = None,
    reward_std: float | None = None,
    reward_aggregation: str = "mean",
    reward_ensemble_coef: float = 1.0,
    reference_model: str | os.PathLike | None = None,
    start_adapter: str | os.PathLike | None = None,
    start_model: str | os.PathLike | None = None,
) -> RunResult:
    """GRPO and RLOO: TRL trainers that sample completions and score them with reward functions (the arguments
    :func:`run_grpo` documents)."""
    method = method_preset(preset) if isinstance(preset, str) else preset
    if reward_model is None and not reward_funcs:
        raise ConfigError(f"run_{name} needs a reward: pass reward_model (a trained reward model) and/or reward_funcs")
    if config.beta == 0:
        logger.warning(
            "%s: beta=0 removes the KL penalty to the SFT model, so nothing keeps the policy where the reward model "
            "is accurate (reward hacking); set beta > 0 (rlhfkit's GRPO default %s)",
            name,
            GRPO_BETA,
        )
    train_dataset = prompt_dataset(train_dataset)

    funcs: list = []
    if reward_model is not None:
        ensemble = {"aggregation": reward_aggregation, "coef": reward_ensemble_coef}
        kw = {"mean": reward_mean, "std": reward_std}
        funcs.append(_reward_function(reward_model, reward_tokenizer, method, trust_remote_code, ensemble, kw))
    funcs.extend([reward_funcs] if callable(reward_funcs) else list(reward_funcs or []))
    if reward_weights is not None:
        config = copy.copy(config)  # the caller's config keeps its own weights
        config.reward_weights = [float(w) for w in reward_weights]
    if config.reward_weights is not None and len(config.reward_weights) != len(funcs):
        raise ConfigError(
            f"reward_weights={config.reward_weights} has {len(config.reward_weights)} weight(s) for {len(funcs)} "
            "reward function(s); give one per function, the reward model first"
        )

    model, tokenizer, peft_config = load_start_policy(
        name, model_name_or_path, method, reference_model=reference_model, start_adapter=start_adapter,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip
    start = model.config._name_or_path
    if reference_model is not None:  # TRL builds the frozen reference from the policy config's model id
        model.config._name_or_path = str(reference_model)
    try:
        trainer = trainer_cls(
            model=model,
            reward_funcs=funcs,
            args=config,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=list(callbacks or []),
        )
    finally:
        model.config._name_or_path = start
    if reward_model is not None:
        place_reward_function(funcs[0], trainer.accelerator.device)
    # Monitors are always on; built after the trainer, which creates the reference model they check stays frozen.
    return train_monitored(
        trainer, tokenizer, config, name, str(model_name_or_path), monitor_config, start_model=start_model
    )
