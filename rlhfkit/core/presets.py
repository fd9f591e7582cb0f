"""Presets: the choices users pick instead of hand-tuning.

Two kinds, both plain data that expand to plain objects you can inspect and override
(``rlhfkit presets show NAME`` prints them):

* **method presets** -- ``full``, ``lora``, ``qlora`` -- expand to a ``peft.LoraConfig`` (or None), a
  ``transformers.BitsAndBytesConfig`` (or None) and a few Trainer kwargs;
* **GPU-size presets** -- 8, 12, 16, 24, 48, 80 GB -- expand, per trainer (``sft``, ``reward``, ``ppo``,
  ``grpo``, ``rloo``, ``dpo``, ``best_of_n``), to Trainer kwargs: per-device batch size, gradient accumulation,
  gradient checkpointing, sequence / generation lengths. They are sized for the model classes people train on such
  a GPU (8-16 GB: up to ~1.5B with qlora; 24 GB: up to 8B with qlora; 48-80 GB: 8B with lora or full fine-tuning of
  ~1B); ``rlhfkit plan`` checks a concrete model against them.

Precedence everywhere: preset < YAML config < command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.hardware import compute_dtype

METHODS = ("full", "lora", "qlora")
# The trainers a GPU-size preset has a row for (a training run's trainer, not a pipeline stage).
TRAINERS = ("sft", "reward", "ppo", "grpo", "rloo", "dpo", "best_of_n")
GPU_SIZES = (8, 12, 16, 24, 48, 80)

# ---------------------------------------------------------------------------------------- RL defaults
# The KL coefficient rlhfkit's GRPO starts from (rlhfkit.rl.configs.GRPOConfig, the pipeline, the recipe, the planner).
# TRL's GRPOConfig defaults to beta=0.0, which drops the reference model and with it the KL leash to the SFT model
# that the InstructGPT recipe relies on to keep the policy where the reward model is still accurate. 0.04 is
# DeepSeekMath's GRPO value (and TRL's default in its first GRPO releases); smaller values (DeepSeek-R1: 0.001) suit
# verifiable rewards, which cannot be over-optimised the way a learned reward model can. On the lab
# (bench/overoptimization.py) 0.04 is still a loose leash for GRPO's unit-variance advantages: 0.3 kept most of the
# gold reward where 0.01 and 0.04 lost it.
GRPO_BETA = 0.04
# RLOO's KL coefficient (rlhfkit.rl.configs.RLOOConfig): TRL's default, kept. RLOO subtracts beta x the sequence's
# log-ratio from each reward (Ahmadian et al. 2024), so with rewards normalised by the reward model's spread 0.05 is
# 0.05 standard deviations per nat of KL; TRL's GRPO default (0) would drop the leash, its RLOO default does not.
RLOO_BETA = 0.05
# DPO's KL measurement for the monitors (rlhfkit.rl.configs.DPOConfig, the planner): prompts sampled at every log, and
# tokens per response. 32 sequences give the mean KL to about +-10% once it is above ~1 nat; the cost is one generation
# of 32 sequences per log, small beside the logging interval's training steps.
DPO_KL_SAMPLES = 32
DPO_KL_MAX_NEW_TOKENS = 128

# LoRA defaults, with the reason for each.
LORA_DEFAULTS: dict[str, Any] = {
    # r=16: quality of r=64 on instruction tuning within noise in the QLoRA paper's ablations, at a quarter of
    # the adapter memory; higher r = more capacity and memory.
    "r": 16,
    # alpha = 2r: the common scaling (effective update scale alpha/r = 2) that keeps one learning rate working
    # across ranks.
    "lora_alpha": 32,
    # 0.05: the QLoRA paper's dropout for models up to 13B.
    "lora_dropout": 0.05,
    # all-linear: adapting every linear layer (not only q/v) is what closes the gap to full fine-tuning (QLoRA).
    "target_modules": "all-linear",
    "bias": "none",
}

# Learning rates by method (SFT/reward; RL stages set their own, smaller ones in their configs):
# full fine-tuning ~1e-5 (InstructGPT SFT used 9.65e-6 .. 1e-5); LoRA needs ~10x more (QLoRA used 1e-4..2e-4).
METHOD_TRAINER_KWARGS: dict[str, dict[str, Any]] = {
    "full": {},
    "lora": {"gradient_checkpointing_kwargs": {"use_reentrant": False}},
    "qlora": {"gradient_checkpointing_kwargs": {"use_reentrant": False}},
}


def method_trainer_kwargs(name: str) -> dict[str, Any]:
    """The TrainingArguments fields method preset ``name`` needs (:data:`METHOD_TRAINER_KWARGS`): what building a
    trainer's config takes from the preset, without importing peft for its ``LoraConfig``."""
    if name not in METHODS:
        raise ConfigError(f"preset={name!r} is not a method preset; choose one of {list(METHODS)}")
    return dict(METHOD_TRAINER_KWARGS[name])


@dataclass
class MethodPreset:
    """A method preset expanded to plain objects.

    Attributes:
        name: ``full``, ``lora`` or ``qlora``.
        lora: the ``peft.LoraConfig`` to train, or None for full fine-tuning.
        quantization: the ``transformers.BitsAndBytesConfig`` to load the base with, or None.
        trainer_kwargs: TrainingArguments fields this method needs.
    """

    name: str
    lora: Any = None
    quantization: Any = None
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_peft(self) -> bool:
        return self.lora is not None


def method_preset(name: str, hardware=None, *, task_type: str = "CAUSAL_LM", **lora_overrides: Any) -> MethodPreset:
    """Expand method preset ``name`` (``full``, ``lora``, ``qlora``) to plain objects.

    Args:
        name: the preset.
        hardware: a :class:`rlhfkit.models.loading.Hardware`; detected when None. Chooses qlora's compute dtype.
        task_type: peft task type: ``CAUSAL_LM`` for policies, ``SEQ_CLS`` for reward/value models (their
            ``score`` head is then trained in full, through peft's ``modules_to_save``).
        **lora_overrides: LoraConfig fields that replace the defaults (``r=64``, ``target_modules=[...]``).
    """
    trainer_kwargs = method_trainer_kwargs(name)
    if name == "full":
        if lora_overrides:
            raise ConfigError(f"LoRA fields {sorted(lora_overrides)} were given with preset=full; use preset=lora")
        return MethodPreset(name=name, trainer_kwargs=trainer_kwargs)
    from peft import LoraConfig

    unknown = sorted(set(lora_overrides) - set(LoraConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown LoRA field(s) {unknown}; valid fields include {sorted(LORA_DEFAULTS)} + peft's")
    kwargs = {**LORA_DEFAULTS, **lora_overrides}
    if task_type == "SEQ_CLS":
        kwargs.setdefault("modules_to_save", ["score"])
    lora = LoraConfig(task_type=task_type, **kwargs)
    quantization = None
    if name == "qlora":
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",  # NF4: information-theoretically optimal for normal weights (QLoRA)
            bnb_4bit_use_double_quant=True,  # quantise the quantisation constants too: ~0.4 bits/param saved
            bnb_4bit_compute_dtype=compute_dtype(hardware),  # bf16 where supported, else fp16 (GPU) / fp32 (CPU)
        )
    return MethodPreset(name=name, lora=lora, quantization=quantization, trainer_kwargs=trainer_kwargs)


# ---------------------------------------------------------------------------------------- GPU-size presets
# Per trainer, per GPU size: TrainingArguments fields. Effective batch per device is kept at 16 sequences
# (pairs for the reward stage) by trading batch size against accumulation. Gradient checkpointing is on at
# every size: it costs ~30% more compute, and without it activations dominate (``rlhfkit plan``: Qwen2.5-0.5B
# full SFT at batch 16 x 4096 tokens needs ~99 GiB, 85 of them activations; with checkpointing 6.6 GiB of
# activations). Turn it off only when ``rlhfkit plan --no-checkpointing`` says it fits.
_BATCH = ("per_device_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing")
# fmt: off
_GPU_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": (*_BATCH, "max_length"),
    "reward": (*_BATCH, "max_length"),  # max_length of prompt + response, per side of a pair
    "ppo": (*_BATCH, "response_length", "local_rollout_forward_batch_size"),
    # GRPO: per_device_train_batch_size * gradient_accumulation_steps must be divisible by num_generations.
    "grpo": (*_BATCH, "num_generations", "max_completion_length"),
    "rloo": (*_BATCH, "num_generations", "max_completion_length"),  # as GRPO; k = 4 (RLOO's paper: 2..4)
    "dpo": (*_BATCH, "max_length"),  # pairs per batch (2 sequences each), max_length of prompt + response
    # rejection sampling: a round's fine-tuning batches, then N samples per prompt, generation_batch_size at a time
    "best_of_n": (*_BATCH, "num_samples", "max_completion_length", "generation_batch_size"),
}
_GPU_ROWS: dict[str, dict[int, tuple]] = {
    "sft": {8: (1, 16, True, 1024), 12: (2, 8, True, 1024), 16: (2, 8, True, 2048),
            24: (4, 4, True, 2048), 48: (8, 2, True, 2048), 80: (16, 1, True, 4096)},
    "reward": {8: (1, 16, True, 512), 12: (2, 8, True, 1024), 16: (2, 8, True, 1024),
               24: (4, 4, True, 1024), 48: (8, 2, True, 2048), 80: (16, 1, True, 2048)},
    "ppo": {8: (1, 16, True, 128, 1), 12: (2, 8, True, 128, 2), 16: (2, 8, True, 256, 2),
            24: (4, 4, True, 256, 4), 48: (8, 2, True, 512, 8), 80: (16, 1, True, 512, 16)},
    "grpo": {8: (2, 8, True, 4, 128), 12: (4, 4, True, 8, 256), 16: (4, 4, True, 8, 256),
             24: (8, 2, True, 8, 512), 48: (16, 1, True, 8, 1024), 80: (32, 1, True, 16, 1024)},
    "rloo": {8: (2, 8, True, 4, 128), 12: (4, 4, True, 4, 256), 16: (4, 4, True, 4, 256),
             24: (8, 2, True, 4, 512), 48: (16, 1, True, 4, 1024), 80: (32, 1, True, 4, 1024)},
    "dpo": {8: (1, 16, True, 512), 12: (2, 8, True, 1024), 16: (2, 8, True, 1024),
            24: (4, 4, True, 1024), 48: (8, 2, True, 2048), 80: (16, 1, True, 2048)},
    "best_of_n": {8: (1, 16, True, 4, 128, 8), 12: (2, 8, True, 8, 256, 16), 16: (2, 8, True, 8, 256, 16),
                  24: (4, 4, True, 8, 512, 32), 48: (8, 2, True, 8, 1024, 64), 80: (16, 1, True, 16, 1024, 128)},
}
# fmt: on


def gpu_preset(gb: int | str, trainer: str, **overrides: Any) -> dict[str, Any]:
    """TrainingArguments fields of the ``gb``-GB GPU preset for ``trainer``, with ``overrides`` applied.

    Raises ConfigError naming the valid sizes, trainers or fields when one is unknown.
    """
    if trainer not in _GPU_ROWS:
        raise ConfigError(f"trainer {trainer!r} has no GPU-size preset; choose one of {list(TRAINERS)}")
    size = _gpu_size(gb)
    if size is None:
        raise ConfigError(f"gpu={gb!r} is not a GPU-size preset; choose one of {list(GPU_SIZES)} (GB)")
    kwargs = dict(zip(_GPU_COLUMNS[trainer], _GPU_ROWS[trainer][size], strict=True))
    unknown = sorted(set(overrides) - set(kwargs))
    if unknown:
        raise ConfigError(f"unknown {trainer} GPU-preset field(s) {unknown}; valid fields: {sorted(kwargs)}")
    kwargs.update(overrides)
    return kwargs


def describe(name: str | int, trainer: str | None = None) -> dict[str, Any]:
    """A JSON-friendly view of a preset (what ``rlhfkit presets show NAME`` prints)."""
    if str(name) in METHODS:
        preset = method_preset(str(name))
        out: dict[str, Any] = {"preset": preset.name, "trainer_kwargs": preset.trainer_kwargs}
        out["lora"] = None if preset.lora is None else _public_fields(preset.lora)
        out["quantization"] = None if preset.quantization is None else preset.quantization.to_dict()
        return out
    trainers = [trainer] if trainer else list(TRAINERS)
    tables = {s: gpu_preset(name, s) for s in trainers} if _gpu_size(name) else None
    if tables is None:
        raise ConfigError(
            f"unknown preset {name!r}; method presets: {list(METHODS)}, GPU presets (GB): {list(GPU_SIZES)}"
        )
    return {"gpu_gb": _gpu_size(name), **tables}


def _gpu_size(gb: int | str) -> int | None:
    try:
        size = int(str(gb).lower().removesuffix("gb"))
    except ValueError:
        return None
    return size if size in GPU_SIZES else None


def _public_fields(cfg: Any) -> dict[str, Any]:
    keep = ("task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "modules_to_save")
    out = {}
    for k in keep:
        v = getattr(cfg, k)
        out[k] = sorted(v) if isinstance(v, set) else v
    return out
