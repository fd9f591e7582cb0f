"""What fits where: the fit table (model x trainer x GPU, docs/memory.md) and config files planned on the GPU they
name -- a recipe config (``configs/<model>/<trainer>.yaml``) or every training run of a pipeline config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.presets import GPU_SIZES, METHODS, TRAINERS
from rlhfkit.planner.dims import model_dims
from rlhfkit.planner.memory import GIB
from rlhfkit.planner.plans import SEQ_LEN_FIELD, Plan, plan

RL_ALGORITHMS = ("ppo", "grpo", "rloo", "dpo", "best_of_n")  # a pipeline's rl.algorithm: the trainer it plans


# ------------------------------------------------------------------------------------------------ fit table
@dataclass
class FitRow:
    """One cell of the fit table: the first preset (in the order tried) that fits, or None."""

    model: str
    trainer: str
    gpu_gb: int
    preset: str | None
    total_gib: float


def fit_table(
    models: list[str],
    trainers: tuple[str, ...] = ("sft", "reward", "ppo", "grpo"),
    gpus: tuple[int, ...] = GPU_SIZES,
    preset_for=None,
    **plan_kwargs: Any,
) -> list[FitRow]:
    """What fits where: for each model x trainer x GPU, plan with the GPU-size preset's batch and lengths.

    ``preset_for(model, trainer, gpu)`` returns the presets to try, most preferred first (default: full, lora,
    qlora -- the cell shows the least compressed method that fits). PPO uses its default layout (shared base
    with lora/qlora). ``plan_kwargs`` go to every :func:`plan` (e.g. ``gradient_checkpointing=True``).
    """
    rows = []
    for model in models:
        dims = model_dims(model)
        for trainer in trainers:
            for gpu in gpus:
                tried = preset_for(model, trainer, gpu) if preset_for else METHODS
                chosen, total = None, 0.0
                for preset in tried:
                    p = plan(dims, trainer, preset, gpu, suggest=False, **plan_kwargs)
                    total = p.total_bytes / GIB
                    if p.fits:
                        chosen = preset
                        break
                rows.append(FitRow(dims.name, trainer, gpu, chosen, round(total, 1)))
    return rows


def fit_table_markdown(rows: list[FitRow]) -> str:
    """A markdown table: one line per model x trainer, one column per GPU size; cells name the method that fits."""
    gpus = sorted({r.gpu_gb for r in rows})
    keys = list(dict.fromkeys((r.model, r.trainer) for r in rows))
    cell = {(r.model, r.trainer, r.gpu_gb): r for r in rows}
    label = {
        "sft": "SFT",
        "reward": "reward",
        "ppo": "PPO (shared base)",
        "grpo": "GRPO",
        "rloo": "RLOO",
        "dpo": "DPO",
        "best_of_n": "best-of-N rounds",
    }
    lines = [
        "| model | stage | " + " | ".join(f"{g} GB" for g in gpus) + " |",
        "|---|---|" + "---|" * len(gpus),
    ]
    for model, trainer in keys:
        cells = [cell[(model, trainer, g)].preset or "—" for g in gpus]
        lines.append(f"| {model.split('/')[-1]} | {label[trainer]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- config files
# YAML keys (TRL / rlhfkit config fields) -> plan() arguments.
_CONFIG_KEYS = {
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "gradient_checkpointing": "gradient_checkpointing",
    "activation_checkpointing": "gradient_checkpointing",
    "max_prompt_length": "prompt_length",
    "num_generations": "num_generations",
    "generation_batch_size": "generation_batch_size",
    "local_rollout_forward_batch_size": "rollout_batch_size",
    "beta": "beta",
    "lora_r": "lora_r",
    "layout": "layout",
}


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {str(path)!r}: {e}".splitlines()[0]) from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of keys to values, got {type(cfg).__name__}")
    return cfg


def plan_kwargs(trainer: str, fields: dict[str, Any]) -> dict[str, Any]:
    """:func:`plan` arguments from a trainer's config fields (TRL / rlhfkit names); absent fields keep the preset's."""
    kwargs = {arg: fields[key] for key, arg in _CONFIG_KEYS.items() if fields.get(key) is not None}
    if fields.get(SEQ_LEN_FIELD[trainer]) is not None:
        kwargs["seq_len"] = fields[SEQ_LEN_FIELD[trainer]]
    return kwargs


def check_config_fits(path: str | os.PathLike, model: str | os.PathLike | None = None) -> Plan:
    """Plan the run a ``configs/<model>/<trainer>.yaml`` describes, on the GPU it names.

    The YAML needs ``model_name_or_path``, ``preset`` and ``gpu`` (GB); the trainer is its ``stage`` key or the
    file name. TRL fields (``per_device_train_batch_size``, ``max_length``, ``response_length``,
    ``max_completion_length``, ...) override the GPU-size preset's values. ``plan.fits`` says whether it fits.
    ``model`` replaces ``model_name_or_path`` (plan a later run on the hub model before ``runs/.../sft/model``
    exists: the SFT model has the same dimensions).
    """
    path = Path(path)
    cfg = _read_yaml(path)
    if model is not None:
        cfg["model_name_or_path"] = str(model)
    for key in ("model_name_or_path", "preset", "gpu"):
        if key not in cfg:
            raise ConfigError(f"{path}: field {key!r} is missing; add it (the planner needs model, preset and gpu)")
    trainer = cfg.get("stage", path.stem)
    if trainer not in TRAINERS:
        raise ConfigError(
            f"{path}: stage={trainer!r} is unknown; name the file <stage>.yaml or set stage: {list(TRAINERS)}"
        )
    return plan(cfg["model_name_or_path"], trainer, cfg["preset"], float(cfg["gpu"]), **plan_kwargs(trainer, cfg))


def check_pipeline_fits(
    path: str | os.PathLike, model: str | os.PathLike | None = None, algorithm: str | None = None
) -> dict[str, Plan]:
    """Plan every training run of a pipeline config (``rlhfkit run FILE``) on the GPU its ``model`` section names.

    Returns ``{"sft": Plan, "reward": Plan, <rl.algorithm>: Plan}``: each trainer with ``model.preset`` on
    ``model.gpu``, its section's fields (``sft:``, ``reward:``, ``ppo:`` / ``grpo:`` / ...) overriding the GPU-size
    preset's batch sizes and lengths, PPO in ``rl.layout`` (default: shared with LoRA), and the RL run holding
    ``reward.ensemble_size`` reward models. Reads the YAML only
    (no torch, no TRL), so it does not validate the config: ``rlhfkit.pipeline.config.load_config`` does. ``model``
    replaces ``model.model_name_or_path``; ``algorithm`` plans that RL algorithm instead of ``rl.algorithm`` (as
    ``--set rl.algorithm=...`` or ``rlhfkit compare`` would run it).
    """
    path = Path(path)
    cfg = _read_yaml(path)
    section = dict(cfg.get("model") or {})
    if model is not None:
        section["model_name_or_path"] = str(model)
    for key in ("model_name_or_path", "preset", "gpu"):
        if section.get(key) is None:
            raise ConfigError(
                f"{path}: model.{key} is missing; the planner needs the model name, preset and gpu in section model"
            )
    rl = cfg.get("rl") or {}
    algorithm = algorithm or rl.get("algorithm", "grpo")
    if algorithm not in RL_ALGORITHMS:
        raise ConfigError(f"{path}: rl.algorithm={algorithm!r} must be one of {', '.join(RL_ALGORITHMS)}")
    dims = model_dims(section["model_name_or_path"])
    plans = {}
    for trainer in ("sft", "reward", algorithm):
        kwargs = plan_kwargs(trainer, cfg.get(trainer) or {})
        if trainer == "ppo" and rl.get("layout") is not None:
            kwargs["layout"] = rl["layout"]
        if trainer == algorithm:  # the reward ensemble's members are all held during RL
            kwargs["reward_members"] = int((cfg.get("reward") or {}).get("ensemble_size", 1))
        plans[trainer] = plan(dims, trainer, section["preset"], float(section["gpu"]), **kwargs)
    return plans


def plan_config(path: str | os.PathLike, model: str | os.PathLike | None = None) -> dict[str, Plan]:
    """Plan a recipe config (``{trainer: Plan}``, :func:`check_config_fits`) or a pipeline config (one plan per
    training run, :func:`check_pipeline_fits`); a pipeline config is one with a ``model:`` section."""
    if isinstance(_read_yaml(Path(path)).get("model"), dict):
        return check_pipeline_fits(path, model)
    p = check_config_fits(path, model)
    return {p.trainer: p}
