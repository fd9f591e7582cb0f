"""The training runs: build a trainer from its config + an rlhfkit preset, train, save.

:func:`run_sft`, :func:`run_reward` (TRL's trainers), :func:`run_ppo` (rlhfkit's :class:`~rlhfkit.ppo.PPOTrainer`)
:func:`run_grpo` / :func:`run_rloo` (TRL's ``GRPOTrainer`` / ``RLOOTrainer`` with
:class:`~rlhfkit.scoring.RewardModelScorer`, one implementation) and :func:`run_dpo`
(:class:`rlhfkit.trainers.DPOTrainer`) each return a :class:`RunResult`; rejection sampling, an orchestration of
:func:`run_sft` rounds, is :func:`rlhfkit.best_of_n.run_best_of_n`. The pipeline's stages and the recipes call these;
a run is named after its trainer (``sft``, ``reward``, ``ppo``, ``grpo``, ``rloo``, ``dpo``, ``best_of_n``), a
pipeline *stage* after its place in the pipeline (``rl`` runs one of the last five).

Every run writes into its ``config.output_dir``:

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

from rlhfkit.ensemble import MEMBER_DIR, EnsembleMember, bootstrap, write_ensemble
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.healthy import return_healthy, returns_start, save_starting_policy
from rlhfkit.io import atomic_path, write_json
from rlhfkit.models import (
    ADAPTER_SUBDIR,
    MODEL_SUBDIR,
    load_policy,
    load_reward_model,
    merge_adapter,
    save_final,
)
from rlhfkit.monitors import HealthMonitor, MonitorConfig, build_monitors, frozen_models
from rlhfkit.ppo import PPOTrainer, load_ppo_models
from rlhfkit.presets import GRPO_BETA, method_preset
from rlhfkit.reward import RewardConfig
from rlhfkit.scoring import (
    EnsembleScorer,
    RewardModelScorer,
    load_reward_function,
    member_score_stats,
    place_reward_function,
)
from rlhfkit.trainers import DPOTrainer, RewardTrainer

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a training run produced.

    Attributes:
        trainer: ``sft``, ``reward``, ``ppo``, ``grpo``.
        model_dir: folder of the final model + tokenizer (``<output_dir>/model``).
        metrics: final training metrics plus, when an eval set was given, ``eval_loss_before`` and
            ``eval_loss`` (SFT) or ``eval_accuracy`` (reward).
        log_history: the Trainer's log history (one dict per logging step).
    """

    trainer: str
    model_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ helpers
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
        preset: ``full`` | ``lora`` | ``qlora`` or a :class:`~rlhfkit.presets.MethodPreset`.
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
) -> RunResult:
    """Reward-model training with :class:`rlhfkit.trainers.RewardTrainer`: TRL's ``RewardTrainer`` (Bradley-Terry loss
    on chosen vs rejected) plus InstructGPT's K-wise loss on rankings.

    Args:
        model_name_or_path: the SFT model (InstructGPT initialises the reward model from it); a new
            one-output ``score`` head is added.
        train_dataset: TRL preference rows: ``prompt``/``chosen``/``rejected`` (explicit prompt) or
            ``chosen``/``rejected``; an optional ``margin`` column (e.g. a vote margin) enters the loss. Pairs with a
            ``group`` column (rankings: :func:`rlhfkit.data.from_rankings`) train with the K-wise loss, one ranking
            per batch element, unless ``config.group_rankings`` is False.
        config: a :class:`rlhfkit.reward.RewardConfig` (``trl.RewardConfig`` plus ``group_rankings`` and the
            ensemble's fields); a plain ``trl.RewardConfig`` works too (rankings then train K-wise, the default).
            ``ensemble_size > 1`` trains that many members (seeds ``seed``, ``seed + 1``, ...; with
            ``ensemble_bootstrap`` each on a bootstrap resample) into ``<output_dir>/member-k/`` and writes
            ``<output_dir>/model/ensemble.json`` (:mod:`rlhfkit.reward`). Finished members are kept on a rerun.
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
    kw = {"trust_remote_code": trust_remote_code, "callbacks": callbacks}
    if getattr(config, "ensemble_size", 1) > 1:
        return _run_reward_ensemble(str(model_name_or_path), train_dataset, config, eval_dataset, method, **kw)
    trainer, tokenizer = _reward_trainer(str(model_name_or_path), train_dataset, config, eval_dataset, method, **kw)
    return _train_and_save(trainer, tokenizer, config, "reward", str(model_name_or_path), "reward", eval_dataset)


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
            result = _train_and_save(trainer, tokenizer, cfg, "reward", model_name_or_path, "reward", eval_dataset)
            mean, std = member_score_stats(trainer.model, tokenizer, stats_rows, cfg.max_length)
            saved = {"mean": mean, "std": std, "metrics": result.metrics, "log_history": result.log_history}
            if trainer.accelerator.is_main_process:
                write_json(stats_file, saved)
                remove_checkpoints(member_out)  # a finished member is kept whole: a rerun resumes at the next one
        metrics.update({f"member_{k}/{name}": v for name, v in saved["metrics"].items()})
        history += [{**row, "member": k} for row in saved["log_history"]]
        adapter = member_out / ADAPTER_SUBDIR
        members.append(EnsembleMember(member_out / MODEL_SUBDIR, adapter if adapter.is_dir() else None,
                                      saved["mean"], saved["std"]))  # fmt: skip
    model_dir = out / MODEL_SUBDIR
    if PartialState().is_main_process:
        write_ensemble(model_dir, members, model_name_or_path)
    PartialState().wait_for_everyone()
    return RunResult(trainer="reward", model_dir=model_dir, metrics=metrics, log_history=history)


def _train_and_save(
    trainer, tokenizer, config, name, base_model, model_kind, eval_dataset, health: HealthMonitor | None = None
) -> RunResult:
    metrics: dict[str, float] = {}
    if eval_dataset is not None:
        before = trainer.evaluate()
        metrics.update({f"{k}_before": v for k, v in before.items() if k.startswith("eval_") and "runtime" not in k})
    resume = last_checkpoint(config.output_dir) if config.resume_from_checkpoint is None else None
    if resume:
        logger.info("%s: resuming from %s", name, resume)
    out = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint or resume)
    metrics.update(out.metrics)
    if health is not None:
        metrics.update(return_healthy(trainer, health))
    if eval_dataset is not None:
        metrics.update({k: v for k, v in trainer.evaluate().items() if "runtime" not in k})
    if returns_start(metrics):
        model_dir = save_starting_policy(trainer, base_model, config.output_dir)
    else:
        model_dir = save_final(trainer, tokenizer, config.output_dir, base_model=base_model, model_kind=model_kind)
    return RunResult(trainer=name, model_dir=model_dir, metrics=metrics, log_history=list(trainer.state.log_history))


def remove_checkpoints(output_dir: str | os.PathLike) -> None:
    """Delete ``checkpoint-N`` folders once a run's final model is saved (they can be large)."""
    for path in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)


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
) -> RunResult:
    """RL against the reward model with rlhfkit's :class:`~rlhfkit.ppo.PPOTrainer` (InstructGPT's PPO).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and the frozen reference.
        train_dataset: rows with a ``prompt`` column (text or chat messages), or a list of prompt strings.
        config: a :class:`rlhfkit.ppo.PPOConfig`; build it with :func:`stage_config` (presets, precision).
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
            (:func:`rlhfkit.scoring.aggregate_rewards`); the members' spread is logged as
            ``rewards/ensemble_std/mean``. With the shared layout the members are K reward adapters on the one
            base; the value model starts from member 0 (:func:`rlhfkit.ppo.load_ppo_models`).
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the policy (a LoRA policy merged into an unquantised copy
        of the SFT model, its adapter kept in ``<output_dir>/adapter``) -- after a stop alert, the average of the
        last healthy checkpoints; ``metrics`` says so (:func:`return_healthy`: ``monitor_alerts``, ``stop_step``,
        ``last_healthy_step``, ``returned_step``, ``averaged_steps``, ``returned_reason``).
    """
    import dataclasses

    if reward_mean is not None or reward_std is not None:  # PPOConfig checks them (together, std > 0)
        config = dataclasses.replace(config, reward_mean=reward_mean, reward_std=reward_std)
    prompts = _prompt_dataset(train_dataset)
    models = load_ppo_models(
        str(model_name_or_path),
        str(reward_model),
        preset=preset,
        layout=layout,
        trust_remote_code=trust_remote_code,
        reward_aggregation=reward_aggregation,
        reward_ensemble_coef=reward_ensemble_coef,
    )
    metric_funcs = list(metric_funcs or [])
    if isinstance(models["reward_model"], EnsembleScorer):  # its members' spread, logged every update
        metric_funcs.append(models["reward_model"].ensemble_std)
    trainer = PPOTrainer(
        config, train_dataset=prompts, metric_funcs=metric_funcs, callbacks=list(callbacks or []), **models
    )
    if isinstance(models["reward_model"], EnsembleScorer):
        place_reward_function(models["reward_model"], trainer.accelerator.device)
    frozen, frozen_exclude = _frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config or MonitorConfig(), frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    resume = last_checkpoint(config.output_dir)
    if resume:
        logger.info("ppo: resuming from %s", resume)
    out = trainer.train(resume_from_checkpoint=resume)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    metrics = {**out.metrics, **return_healthy(trainer, health)}
    if returns_start(metrics):
        model_dir = save_starting_policy(trainer, model_name_or_path, config.output_dir)
    else:
        model_dir = save_ppo_policy(trainer, str(model_name_or_path), config.output_dir)
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


def _frozen_check_targets(trainer) -> tuple[dict, dict]:
    """The monitors' frozen models and the parameters to skip in them, for :func:`rlhfkit.monitors.build_monitors`.

    On the CPU, bitsandbytes repacks 4-bit weights in place (same values, another layout) on their first forward
    and back whenever a checkpoint is saved, so their bytes change without training; they are skipped there. They
    cannot be trained anyway (packed integers without gradients); the model's other parameters are still checked.
    """
    import re

    models, exclude = frozen_models(trainer)
    if trainer.accelerator.device.type == "cpu":
        for label, module in models.items():
            packed = [f"^{re.escape(n)}$" for n, p in module.named_parameters() if hasattr(p, "quant_state")]
            exclude[label] = (*exclude.get(label, ()), *packed)
    return models, exclude


def _prompt_dataset(data):
    """A Dataset with a ``prompt`` column from a Dataset, a list of row dicts or a list of prompt strings."""
    if isinstance(data, Sequence) and data and isinstance(data[0], str):
        data = [{"prompt": p} for p in data]
    return as_dataset(data, "train_dataset", ("prompt",))


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
    **rewards,
) -> RunResult:
    """RL against the reward model with TRL's ``GRPOTrainer`` (group-relative advantages, KL to the SFT model).

    Everything after ``config`` is a keyword (defaults: ``reward_model=None, reward_tokenizer=None,
    reward_funcs=None, reward_weights=None, preset="full", trust_remote_code=False, callbacks=None,
    monitor_config=None, reward_mean=None, reward_std=None, reward_aggregation="mean", reward_ensemble_coef=1.0``;
    :func:`run_rloo` takes the same).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and the frozen reference.
        train_dataset: rows with a ``prompt`` column (text, or a list of chat messages); a plain list of
            prompt strings is accepted too. Other columns are passed to ``reward_funcs`` as keyword arguments.
        config: a ``trl.GRPOConfig``; build it with :func:`grpo_config` (presets, precision, ``beta=0.04``).
            ``beta == 0`` logs a warning: no reference model, no KL leash.
        reward_model: folder of a trained reward model or ensemble (``run_reward``'s ``model_dir``) or a loaded
            ``AutoModelForSequenceClassification``; scored by :class:`RewardModelScorer` exactly as
            ``RewardTrainer`` trained it (an ensemble: :class:`~rlhfkit.scoring.EnsembleScorer`, which also logs
            the members' spread as ``rewards/ensemble_std/mean``). With the ``qlora`` preset it is loaded in 4 bits.
        reward_tokenizer: the reward model's tokenizer; loaded from ``reward_model`` when it is a folder.
        reward_funcs: one or a list of extra rule-based reward functions, TRL's signature
            ``f(prompts, completions, completion_ids, **columns) -> list[float]``.
        reward_weights: one weight per reward function, the reward model first; replaces
            ``config.reward_weights`` (default: all 1.0).
        preset: ``full`` | ``lora`` | ``qlora``. With LoRA the reference is the policy with its adapter
            disabled (TRL does this), so no second copy of the model is loaded.
        callbacks: extra ``TrainerCallback``s; rlhfkit's KL-health / reward-hacking monitors are always added
            (:func:`rlhfkit.monitors.build_monitors`): alerts are logged, ``stop`` alerts end training with a
            checkpoint, the timeline is saved to ``<output_dir>/health.jsonl`` with PNG plots, and the reference
            and reward models are checked bit-identical at the end.
        monitor_config: a :class:`rlhfkit.monitors.MonitorConfig` (default: ``MonitorConfig()``).
        reward_mean, reward_std: normalise the reward model's score as ``(score - mean) / std``.
        reward_aggregation, reward_ensemble_coef: how an ensemble's members make one reward, ``mean`` | ``min`` |
            ``mean_minus_std`` (:func:`rlhfkit.scoring.aggregate_rewards`); ignored for one reward model.
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the (merged) policy -- after a stop alert, the average of
        the last healthy checkpoints; ``metrics`` says so (:func:`return_healthy`: ``monitor_alerts``,
        ``stop_step``, ``last_healthy_step``, ``returned_step``, ``averaged_steps``, ``returned_reason``).
    """
    from trl import GRPOTrainer

    return _run_sampling_rl(GRPOTrainer, "grpo", model_name_or_path, train_dataset, config, **rewards)


def run_rloo(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    **rewards,
) -> RunResult:
    """RL against the reward model with TRL's ``RLOOTrainer`` (REINFORCE with a leave-one-out baseline).

    Each prompt gets ``num_generations`` completions; a completion's advantage is its reward minus the mean reward
    of the *other* completions of its prompt (:mod:`rlhfkit.rloo`). The KL to the SFT model is a per-sequence
    penalty in the reward (``reward - beta * sum_t log(pi / pi_ref)``), so ``beta`` is in units of the reward: pass
    ``reward_mean`` / ``reward_std`` (from rm_eval) to put it in units of the reward model's spread. Arguments,
    monitors and the result are those of :func:`run_grpo`; ``config`` is a ``trl.RLOOConfig``
    (:func:`rlhfkit.rloo.rloo_config`).
    """
    from trl import RLOOTrainer

    return _run_sampling_rl(RLOOTrainer, "rloo", model_name_or_path, train_dataset, config, **rewards)


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
) -> RunResult:
    """GRPO and RLOO: TRL trainers that sample completions and score them with reward functions (the keyword
    arguments :func:`run_grpo` documents, with their defaults)."""
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
    train_dataset = _prompt_dataset(train_dataset)

    funcs: list = []
    if reward_model is not None:
        ensemble = {"aggregation": reward_aggregation, "coef": reward_ensemble_coef}
        kw = {"mean": reward_mean, "std": reward_std}
        funcs.append(_reward_function(reward_model, reward_tokenizer, method, trust_remote_code, ensemble, kw))
    funcs.extend([reward_funcs] if callable(reward_funcs) else list(reward_funcs or []))
    if reward_weights is not None:
        config.reward_weights = [float(w) for w in reward_weights]
    if config.reward_weights is not None and len(config.reward_weights) != len(funcs):
        raise ConfigError(
            f"reward_weights={config.reward_weights} has {len(config.reward_weights)} weight(s) for {len(funcs)} "
            "reward function(s); give one per function, the reward model first"
        )

    model, tokenizer = load_policy(model_name_or_path, method, trust_remote_code=trust_remote_code)
    trainer = trainer_cls(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=method.lora,
        callbacks=list(callbacks or []),
    )
    if reward_model is not None:
        place_reward_function(funcs[0], trainer.accelerator.device)
    # Monitors are always on; built after the trainer, which creates the reference model they check stays frozen.
    return _train_monitored(trainer, tokenizer, config, name, str(model_name_or_path), monitor_config)


def _train_monitored(
    trainer, tokenizer, config, name: str, base_model: str, monitor_config, eval_dataset=None
) -> RunResult:
    """Add the monitors (:func:`rlhfkit.monitors.build_monitors`), train (resuming), save -- after a stop alert the
    average of the last healthy checkpoints (:func:`return_healthy`, whose metrics the result carries)."""
    frozen, frozen_exclude = _frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config or MonitorConfig(), frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    return _train_and_save(trainer, tokenizer, config, name, base_model, "causal", eval_dataset, health)


# ------------------------------------------------------------------------------------------ DPO
# DPO's logged series the monitors keep in their timeline beside the signals they read (chosen/rejected drift).
DPO_HEALTH_KEYS = ("logratios/chosen", "logratios/rejected", "logps/chosen", "logps/rejected", "rewards/accuracies")


def run_dpo(
    model_name_or_path: str | os.PathLike,
    train_dataset,
    config,
    *,
    eval_dataset=None,
    preset="full",
    trust_remote_code: bool = False,
    callbacks: list | None = None,
    monitor_config=None,
) -> RunResult:
    """DPO on preference pairs with :class:`rlhfkit.trainers.DPOTrainer` (TRL's, logging the KL on policy samples).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and the reference of the implicit reward.
        train_dataset: preference pairs, ``prompt`` / ``chosen`` / ``rejected`` (text or chat messages) -- the
            pairs the reward stage trains on.
        config: a :class:`rlhfkit.dpo.DPOConfig` (:func:`rlhfkit.dpo.dpo_config`: presets, precision).
        eval_dataset: held-out pairs; DPO's loss and reward accuracy are measured before and after training.
        preset: ``full`` (the reference is a frozen copy of the SFT model, loaded as the policy is) | ``lora`` |
            ``qlora`` (the reference is the policy with its adapter disabled: one base in memory).
        callbacks: extra ``TrainerCallback``s; the monitors are always added. They read ``objective/kl`` (sampled,
            see :class:`rlhfkit.dpo.DPOConfig`), the reward margins, entropy, length and truncation of the samples;
            :data:`DPO_HEALTH_KEYS` are kept in the timeline; the reference is checked bit-identical at the end.
        monitor_config: a :class:`rlhfkit.monitors.MonitorConfig`.
    Returns:
        a :class:`RunResult` whose ``model_dir`` holds the (merged) policy; ``metrics["monitor_alerts"]``.
    """
    import dataclasses

    method = method_preset(preset) if isinstance(preset, str) else preset
    cols = ("prompt", "chosen", "rejected")
    train_dataset = as_dataset(train_dataset, "train_dataset", cols)
    eval_dataset = as_dataset(eval_dataset, "eval_dataset", cols)
    model, tokenizer = load_policy(model_name_or_path, method, trust_remote_code=trust_remote_code)
    reference = None
    if method.lora is None:  # loaded as the policy is (same tokenizer fixes and dtype), frozen
        reference, _ = load_policy(model_name_or_path, method, trust_remote_code=trust_remote_code)
        reference.eval().requires_grad_(False)
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=method.lora,
        callbacks=list(callbacks or []),
    )
    monitor = monitor_config or MonitorConfig()
    extra = [k for k in DPO_HEALTH_KEYS if k not in monitor.health_extra_keys]
    monitor = dataclasses.replace(monitor, health_extra_keys=[*monitor.health_extra_keys, *extra])
    return _train_monitored(trainer, tokenizer, config, "dpo", str(model_name_or_path), monitor, eval_dataset)
