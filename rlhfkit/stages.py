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
    merged = coerce_numbers(config_cls, {k: v for k, v in merged.items() if k in fields})
    return config_cls(output_dir=str(output_dir), **merged)


def coerce_numbers(config_cls, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Numbers given as strings, for numeric fields: YAML 1.1 (PyYAML) reads ``1e-4`` as the string '1e-4'.

    TRL's argument parser converts command-line strings by field type; configs built from YAML dicts need the same.
    A field is numeric when its type is ``float`` or ``int`` (optionally ``| None``); ``1e3`` is accepted for an
    int field. Other fields, and values that are not strings, are left alone.
    """
    import dataclasses

    out = dict(values)
    for f in dataclasses.fields(config_cls):
        value = out.get(f.name)
        if not isinstance(value, str):
            continue
        kind = str(getattr(f.type, "__name__", f.type)).replace("Optional[", "").strip("]")
        parts = {p.strip() for p in kind.split("|")}
        parts.discard("None")
        if parts not in ({"float"}, {"int"}):
            continue
        try:
            number = float(value)
            if parts == {"int"}:
                if not number.is_integer():
                    raise ValueError
                number = int(number)
        except ValueError:
            raise ConfigError(
                f"{prefix}{f.name}={value!r} is not {'a whole number' if parts == {'int'} else 'a number'}; "
                f"write it as one (e.g. {f.name}: {'100' if parts == {'int'} else '1.0e-4'})"
            ) from None
        out[f.name] = number
    return out


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


# ------------------------------------------------------------------------------------------ GRPO
# The KL coefficient rlhfkit's GRPO recipes and configs start from. TRL's GRPOConfig defaults to beta=0.0, which
# drops the reference model and with it the KL leash to the SFT model that the InstructGPT recipe relies on to keep
# the policy where the reward model is still accurate. 0.04 is DeepSeekMath's GRPO value (and TRL's default in its
# first GRPO releases); smaller values (DeepSeek-R1: 0.001) suit verifiable rewards, which cannot be over-optimised
# the way a learned reward model can. On the lab (bench/overoptimization.py) 0.04 is still a loose leash for GRPO's
# unit-variance advantages: 0.3 kept most of the gold reward where 0.01 and 0.04 lost it.
DEFAULT_BETA = 0.04
GRPO_DEFAULTS: dict[str, Any] = {"beta": DEFAULT_BETA}
REWARD_MODEL_NAME = "reward_model"  # TRL logs its scores as rewards/reward_model/mean and /std


def grpo_config(output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs):
    """A ``trl.GRPOConfig`` via :func:`stage_config` with rlhfkit's GRPO defaults (``beta=0.04``) under ``kwargs``."""
    from trl import GRPOConfig

    return stage_config(GRPOConfig, "grpo", output_dir, preset=preset, gpu=gpu, **{**GRPO_DEFAULTS, **kwargs})


class RewardModelScorer:
    """A GRPO reward function that scores completions with a trained reward model exactly as it was trained.

    TRL's ``RewardTrainer`` trains on ``prompt + chosen + eos_token`` tokenized with the tokenizer's special
    tokens (``add_special_tokens=True``) for text rows, and on the chat template applied to ``prompt + chosen``
    messages for conversational rows. ``GRPOTrainer``'s built-in reward-model path scores text rows as
    ``prompt + completion`` *without* EOS (its completions are decoded with ``skip_special_tokens=True``) and
    with ``add_special_tokens=False``, so the score is read at a different token than in training, and a BOS
    token a Llama-style tokenizer adds in training is missing. This scorer rebuilds the training format:

    * text prompts: ``tokenizer(prompt + completion + eos_token)`` (EOS appended unless already there);
    * conversational prompts: ``tokenizer.apply_chat_template(prompt + completion, tokenize=True)``.

    Sequences are right-padded with a pad token distinct from EOS, so the sequence-classification head reads
    the score at the last real token (the EOS), as in training. A completion cut off by ``max_completion_length``
    is scored as if it ended there (EOS appended); set ``mask_truncated_completions=True`` in the GRPOConfig to
    keep those out of the loss.

    Args:
        model: an ``AutoModelForSequenceClassification`` with one label (frozen here: eval mode, no gradients).
        tokenizer: the reward model's tokenizer (with a pad token distinct from EOS).
        mean, std: optional normalisation ``(score - mean) / std`` with the reward model's score statistics
            (e.g. from its evaluation); it matters when the reward model is combined with other reward
            functions by ``reward_weights``; GRPO's group normalisation makes it irrelevant alone.
        batch_size: completions scored per forward pass.
    """

    def __init__(self, model, tokenizer, *, mean: float | None = None, std: float | None = None, batch_size=64):
        if std is not None and not std > 0:
            raise ConfigError(f"reward_std={std} must be > 0; pass the reward model's score standard deviation")
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ConfigError(
                "reward tokenizer: pad token must exist and differ from EOS (the score is read at the last non-pad "
                "token); load it with rlhfkit.models.load_tokenizer"
            )
        self.model = model.eval().requires_grad_(False)
        self.model.config.pad_token_id = tokenizer.pad_token_id
        self.tokenizer = tokenizer
        self.mean = 0.0 if mean is None else float(mean)
        self.std = 1.0 if std is None else float(std)
        self.batch_size = batch_size
        self.__name__ = REWARD_MODEL_NAME  # TRL names the reward function's metrics after it

    def encode(self, prompt, completion) -> list[int]:
        """Token ids of one (prompt, completion), as ``RewardTrainer`` tokenizes ``(prompt, chosen)``."""
        if isinstance(prompt, str):
            text = prompt + completion
            if not text.endswith(self.tokenizer.eos_token):
                text += self.tokenizer.eos_token
            return self.tokenizer(text=text)["input_ids"]
        ids = self.tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True, return_dict=True)
        return list(ids["input_ids"])

    def score_ids(self, sequences: list[list[int]]):
        """Raw scores (before normalisation) of token-id sequences, shape ``(len(sequences),)`` float32 on CPU."""
        import torch

        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            width = max(len(s) for s in batch)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, s in enumerate(batch):  # right padding: the last real token is the EOS the score is read at
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out)

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        scores = self.score_ids([self.encode(p, c) for p, c in zip(prompts, completions, strict=True)])
        return ((scores - self.mean) / self.std).tolist()


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
) -> StageResult:
    """RL against the reward model with TRL's ``GRPOTrainer`` (group-relative advantages, KL to the SFT model).

    Args:
        model_name_or_path: the SFT model: the policy's starting point and the frozen reference.
        train_dataset: rows with a ``prompt`` column (text, or a list of chat messages); a plain list of
            prompt strings is accepted too. Other columns are passed to ``reward_funcs`` as keyword arguments.
        config: a ``trl.GRPOConfig``; build it with :func:`grpo_config` (presets, precision, ``beta=0.04``).
            ``beta == 0`` logs a warning: no reference model, no KL leash.
        reward_model: folder of a trained reward model (``run_reward``'s ``model_dir``) or a loaded
            ``AutoModelForSequenceClassification``; scored by :class:`RewardModelScorer` exactly as
            ``RewardTrainer`` trained it. With the ``qlora`` preset a folder is loaded in 4 bits.
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
    Returns:
        a :class:`StageResult` whose ``model_dir`` holds the (merged) policy; ``metrics["monitor_alerts"]`` counts
        the monitor's alerts.
    """
    from trl import GRPOTrainer

    from rlhfkit.models import load_policy, load_reward_model
    from rlhfkit.monitors import HealthMonitor, MonitorConfig, build_monitors
    from rlhfkit.presets import method_preset

    method = method_preset(preset) if isinstance(preset, str) else preset
    if reward_model is None and not reward_funcs:
        raise ConfigError("run_grpo needs a reward: pass reward_model (a trained reward model) and/or reward_funcs")
    if config.beta == 0:
        logger.warning(
            "grpo: beta=0 removes the KL penalty to the SFT model, so nothing keeps the policy where the reward model "
            "is accurate (reward hacking); set beta > 0 (rlhfkit's default %s)",
            DEFAULT_BETA,
        )
    train_dataset = _prompt_dataset(train_dataset)

    funcs: list = []
    if reward_model is not None:
        if isinstance(reward_model, str | os.PathLike):
            rm_preset = method_preset("qlora") if method.quantization is not None else "full"
            reward_model, loaded_tokenizer = load_reward_model(
                reward_model, rm_preset, trust_remote_code=trust_remote_code
            )
            reward_tokenizer = reward_tokenizer or loaded_tokenizer
        elif reward_tokenizer is None:
            raise ConfigError("reward_tokenizer is required when reward_model is a loaded model; pass its tokenizer")
        funcs.append(RewardModelScorer(reward_model, reward_tokenizer, mean=reward_mean, std=reward_std))
    funcs.extend([reward_funcs] if callable(reward_funcs) else list(reward_funcs or []))
    if reward_weights is not None:
        config.reward_weights = [float(w) for w in reward_weights]
    if config.reward_weights is not None and len(config.reward_weights) != len(funcs):
        raise ConfigError(
            f"reward_weights={config.reward_weights} has {len(config.reward_weights)} weight(s) for {len(funcs)} "
            "reward function(s); give one per function, the reward model first"
        )

    model, tokenizer = load_policy(model_name_or_path, method, trust_remote_code=trust_remote_code)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=method.lora,
        callbacks=list(callbacks or []),
    )
    scorer = funcs[0] if isinstance(funcs[0], RewardModelScorer) else None
    if scorer is not None and not getattr(scorer.model, "is_loaded_in_4bit", False):
        scorer.model.to(trainer.accelerator.device)
    # Monitors are always on; built after the trainer, which creates the reference model they check stays frozen.
    frozen, frozen_exclude = _frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config or MonitorConfig(), frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    result = _train_and_save(trainer, tokenizer, config, "grpo", str(model_name_or_path), "causal", None)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    result.metrics["monitor_alerts"] = len(health.alerts)
    return result


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
) -> StageResult:
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
    Returns:
        a :class:`StageResult` whose ``model_dir`` holds the policy (a LoRA policy merged into an unquantised copy
        of the SFT model, its adapter kept in ``<output_dir>/adapter``); ``metrics["monitor_alerts"]`` counts alerts.
    """
    import dataclasses

    from rlhfkit.monitors import HealthMonitor, MonitorConfig, build_monitors
    from rlhfkit.ppo import PPOTrainer, load_ppo_models

    if reward_mean is not None or reward_std is not None:  # PPOConfig checks them (together, std > 0)
        config = dataclasses.replace(config, reward_mean=reward_mean, reward_std=reward_std)
    prompts = _prompt_dataset(train_dataset)
    models = load_ppo_models(
        str(model_name_or_path), str(reward_model), preset=preset, layout=layout, trust_remote_code=trust_remote_code
    )
    trainer = PPOTrainer(
        config, train_dataset=prompts, metric_funcs=metric_funcs, callbacks=list(callbacks or []), **models
    )
    frozen, frozen_exclude = _frozen_check_targets(trainer)
    monitors = build_monitors(monitor_config or MonitorConfig(), frozen=frozen, frozen_exclude=frozen_exclude)
    for callback in monitors:
        trainer.add_callback(callback)
    resume = last_checkpoint(config.output_dir)
    if resume:
        logger.info("ppo: resuming from %s", resume)
    out = trainer.train(resume_from_checkpoint=resume)
    model_dir = save_ppo_policy(trainer, str(model_name_or_path), config.output_dir)
    health = next(m for m in monitors if isinstance(m, HealthMonitor))
    metrics = {**out.metrics, "monitor_alerts": len(health.alerts)}
    return StageResult(stage="ppo", model_dir=model_dir, metrics=metrics, log_history=list(trainer.state.log_history))


def save_ppo_policy(trainer, sft_model: str, output_dir: str | os.PathLike) -> Path:
    """Write a PPO run's policy to ``<output_dir>/model`` atomically (main process only; the others wait).

    A LoRA policy (shared base or a PEFT policy) is saved to ``adapter/`` and merged into an unquantised copy of
    the SFT model, so ``model/`` always holds an ordinary full model.
    """
    from rlhfkit.io import atomic_path

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

    from rlhfkit.monitors import frozen_models

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
