"""PPO as a training run: load the layout (:func:`rlhfkit.rl.ppo.layouts.load_ppo_models`), build
:class:`rlhfkit.rl.ppo.trainer.PPOTrainer` with the monitors, train (resuming), return the healthy model after a stop
and save the policy (:func:`run_ppo`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rlhfkit.core.io import atomic_path
from rlhfkit.models.loading import (
    ADAPTER_SUBDIR,
    MODEL_SUBDIR,
    merge_adapter,
)
from rlhfkit.models.scoring import (
    EnsembleScorer,
    place_reward_function,
)
from rlhfkit.monitors import HealthMonitor, MonitorConfig, build_monitors
from rlhfkit.monitors.progress import show_progress
from rlhfkit.rl.healthy import (
    apply_no_harm,
    frozen_check_targets,
    return_healthy,
    returns_start,
    save_starting_policy,
)
from rlhfkit.rl.ppo.layouts import load_ppo_models
from rlhfkit.rl.ppo.trainer import PPOTrainer
from rlhfkit.runs import RunResult, last_checkpoint, prompt_dataset

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ PPO
def run_ppo(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    reward_model: str | os.PathLike,
    preset="full",
    layout: str | None = None,
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    monitor_config=None,
    metric_funcs: Sequence | None = None,
    reward_mean: float | None = None,
    reward_std: float | None = None,
    reward_aggregation: str = "mean",
    reward_ensemble_coef: float = 1.0,
    reference_model: str | os.PathLike | None = None,
) -> RunResult:
    """RL against the reward model with rlhfkit's :class:`~rlhfkit.rl.ppo.trainer.PPOTrainer` (InstructGPT's PPO).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and (without ``reference_model``) the frozen
            reference.
        train_dataset: rows with a ``prompt`` column (text or chat messages), or a list of prompt strings.
        config: a :class:`rlhfkit.rl.ppo.config.PPOConfig`; build it with :func:`stage_config` (presets, precision).
        reward_model: the reward stage's output folder (``run_reward``'s ``model_dir``). With the shared layout the
            LoRA adapter saved beside it (``<reward output>/adapter``) becomes the reward adapter on the policy's base.
        preset: ``full`` | ``lora`` | ``qlora``.
        layout: ``separate`` | ``shared`` (one base holding policy, value and reward adapters; the reference is the
            base with adapters disabled); default: ``separate`` for ``full``, ``shared`` with LoRA.
        callbacks: extra ``TrainerCallback``s; the monitors (:func:`rlhfkit.monitors.build_monitors`) are always
            added, with the reference and reward models checked bit-identical at the end.
        monitor_config: a :class:`rlhfkit.monitors.MonitorConfig` (default: ``MonitorConfig()``).
        metric_funcs: functions logged as ``rewards/<name>/mean`` beside the reward, never optimised (the lab's
            gold reward, say).
        reward_mean, reward_std: normalise reward-model scores as ``(score - mean) / std`` (from rm_eval); they
            replace ``config.reward_mean`` / ``config.reward_std``, so ``kl_coef`` is in units of the score spread.
        reward_aggregation, reward_ensemble_coef: how the members of an ensemble ``reward_model`` make one reward
            (:func:`rlhfkit.models.scoring.aggregate_rewards`); the members' spread is logged as
            ``rewards/ensemble_std/mean``. With the shared layout the members are K reward adapters on the one
            base; the value model starts from member 0 (:func:`rlhfkit.rl.ppo.layouts.load_ppo_models`).
        reference_model: the frozen reference when the policy starts elsewhere (iterative RLHF: the SFT model while
            ``model_name_or_path`` is the last round's policy); the separate layout of preset ``full`` only.
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the policy (a LoRA policy merged into an unquantised copy
        of the SFT model, its adapter kept in ``<output_dir>/adapter``) -- after a stop alert, the average of the
        last healthy checkpoints; ``metrics`` says so (:func:`return_healthy`: ``monitor_alerts``, ``stop_step``,
        ``last_healthy_step``, ``returned_step``, ``averaged_steps``, ``returned_reason``).
    """
    import dataclasses

    if reward_mean is not None or reward_std is not None:  # PPOConfig checks them (together, std > 0)
        config = dataclasses.replace(config, reward_mean=reward_mean, reward_std=reward_std)
    prompts = prompt_dataset(train_dataset)
    models = load_ppo_models(
        str(model_name_or_path),
        str(reward_model),
        preset=preset,
        layout=layout,
        trust_remote_code=trust_remote_code,
        reward_aggregation=reward_aggregation,
        reward_ensemble_coef=reward_ensemble_coef,
        reference_model=None if reference_model is None else str(reference_model),
    )
    metric_funcs = list(metric_funcs or [])
    if isinstance(models["reward_model"], EnsembleScorer):  # its members' spread, logged every update
        metric_funcs.append(models["reward_model"].ensemble_std)
    trainer = PPOTrainer(
        config, train_dataset=prompts, metric_funcs=metric_funcs, callbacks=list(callbacks or []), **models
    )
    if isinstance(models["reward_model"], EnsembleScorer):
        place_reward_function(models["reward_model"], trainer.accelerator.device)
    frozen, frozen_exclude = frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config or MonitorConfig(), frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    show_progress(trainer, "ppo", health)
    resume = last_checkpoint(config.output_dir)
    if resume:
        logger.info("ppo: resuming from %s", resume)
    out = trainer.train(resume_from_checkpoint=resume)
    metrics = {**out.metrics, **return_healthy(trainer, health)}
    if returns_start(metrics):
        model_dir = save_starting_policy(trainer, model_name_or_path, config.output_dir)
    else:
        model_dir = save_ppo_policy(trainer, str(model_name_or_path), config.output_dir)
    model_dir = apply_no_harm(trainer, metrics, model_dir, model_name_or_path, monitor_config or MonitorConfig())
    return RunResult(trainer="ppo", model_dir=model_dir, metrics=metrics, log_history=list(trainer.state.log_history))


def save_ppo_policy(trainer, sft_model: str, output_dir: str | os.PathLike) -> Path:
    """Write a PPO run's policy to ``<output_dir>/model`` atomically (main process only; the others wait).

    A LoRA policy (shared base or a PEFT policy) is saved to ``adapter/`` and merged into an unquantised copy of
    the SFT model, so ``model/`` always holds an ordinary full model.
    """
    out, tok = Path(output_dir), trainer.processing_class
    if trainer.accelerator.is_main_process:
        is_lora = trainer.shared is not None or hasattr(trainer.policy, "peft_config")
        with atomic_path(out / (ADAPTER_SUBDIR if is_lora else MODEL_SUBDIR)) as tmp:
            trainer.save_model(str(tmp))
        if is_lora:
            with atomic_path(out / MODEL_SUBDIR) as tmp:
                merge_adapter(out / ADAPTER_SUBDIR, sft_model, tok).save_pretrained(tmp, safe_serialization=True)
                tok.save_pretrained(tmp)
    trainer.accelerator.wait_for_everyone()
    return out / MODEL_SUBDIR
