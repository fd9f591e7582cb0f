"""Recipe arguments: rlhfkit's small dataclasses beside TRL's configs, and parsing with presets.

Recipes parse ``(ModelArguments, DataArguments, <TRL config>)`` with TRL's own ``TrlParser`` from a
YAML file plus command-line overrides. :func:`parse_recipe` adds rlhfkit's precedence::

    hardware precision  <  method preset  <  GPU-size preset  <  YAML  <  command line

by reading ``preset`` and ``gpu`` first (from the command line, else the YAML) and installing the
presets as parser defaults, so a YAML key or a flag always wins. :func:`trainer_config` builds any trainer's config
from Python with the same precedence, and :func:`coerce_numbers` converts numbers YAML read as strings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.errors import ConfigError
from rlhfkit.hardware import precision_kwargs
from rlhfkit.lab import build_tiny_model
from rlhfkit.presets import gpu_preset, method_preset

LAB_PREFIX = "lab:"


@dataclass
class ModelArguments:
    """Which model to start from and how to fit it on the GPU.

    Attributes:
        model_name_or_path: hub id, local folder, or ``lab:nano`` / ``lab:demo`` for a lab model built locally.
        preset: method preset ``full`` | ``lora`` | ``qlora``.
        gpu: GPU-size preset in GB (8, 12, 16, 24, 48, 80): batch size, accumulation, checkpointing, lengths.
        model_revision: branch, tag or commit of a hub model.

    ``trust_remote_code`` is the TRL config's own field (off unless you turn it on).
    """

    model_name_or_path: str = field(
        default="lab:nano",
        metadata={"help": "Hub id, local folder, or lab:nano / lab:demo for a lab model built locally."},
    )
    preset: str = field(default="full", metadata={"help": "Method preset: full | lora | qlora."})
    gpu: int | None = field(
        default=None,
        metadata={"help": "GPU-size preset in GB (8, 12, 16, 24, 48, 80): batch sizes, checkpointing, lengths."},
    )
    model_revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of a hub model."})


@dataclass
class DataArguments:
    """Where the stage's data comes from.

    Attributes:
        dataset: ``lab`` (the built-in lab generates it), a local file (.jsonl, .jsonl.gz, .json, .parquet,
            .csv) or a hub dataset id.
        dataset_format: how to read preference data: ``auto`` | ``hh`` | ``columns`` | ``rankings`` |
            ``scores`` | ``votes`` (see ``rlhfkit.data``). Ignored for SFT data.
        dataset_split: split of a hub dataset.
        eval_fraction: share of rows held out for evaluation.
        max_samples: use at most this many rows (after shuffling with the seed).
        lab_samples: number of rows the lab generates when ``dataset: lab``.
    """

    dataset: str = field(default="lab", metadata={"help": "lab | path to a data file | hub dataset id."})
    dataset_format: str = field(
        default="auto", metadata={"help": "Preference format: auto | hh | columns | rankings | scores | votes."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a hub dataset."})
    eval_fraction: float = field(default=0.05, metadata={"help": "Share of rows held out for evaluation."})
    max_samples: int | None = field(default=None, metadata={"help": "Use at most this many rows."})
    lab_samples: int = field(default=2000, metadata={"help": "Rows the lab generates when dataset is 'lab'."})

    def __post_init__(self):
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction={self.eval_fraction} must be in [0, 1)")


def _peek(argv: list[str], key: str, config: dict[str, Any]) -> Any:
    """Value of ``--key`` on the command line, else ``key`` in the YAML, else None."""
    for i, arg in enumerate(argv):
        if arg == f"--{key}" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(f"--{key}="):
            return arg.split("=", 1)[1]
    return config.get(key)


def parse_recipe(trainer: str, dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse a recipe's dataclasses with TRL's ``TrlParser``, presets installed as defaults.

    Args:
        trainer: ``sft`` | ``reward`` | ``ppo`` | ``grpo`` (selects the GPU-size preset's fields).
        dataclass_types: the recipe's dataclasses, e.g. ``(ModelArguments, DataArguments, SFTConfig)``.
        argv: arguments (default ``sys.argv[1:]``), typically ``--config configs/lab/sft.yaml [--key value ...]``.
    """
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    config: dict[str, Any] = {}
    if "--config" in argv:
        path = argv[argv.index("--config") + 1]
        if not os.path.isfile(path):
            raise ConfigError(f"--config {path}: no such file")
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    preset, gpu = _peek(argv, "preset", config) or "full", _peek(argv, "gpu", config)
    defaults: dict[str, Any] = {**precision_kwargs(), **method_preset(preset).trainer_kwargs}
    if gpu not in (None, "None"):
        defaults.update(gpu_preset(gpu, trainer))
    parser = TrlParser(dataclass_types)
    known = {f for t in dataclass_types for f in t.__dataclass_fields__}
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in known})
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as e:  # TrlParser reports unknown YAML keys / bad values as ValueError
        raise ConfigError(str(e).splitlines()[0]) from e


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike = "runs/lab-models", seed: int = 0) -> str:
    """Turn ``lab:nano`` / ``lab:demo`` into a locally built lab model folder (built once); pass others through."""
    if not name_or_path.startswith(LAB_PREFIX):
        return name_or_path
    size = name_or_path[len(LAB_PREFIX) :]
    out = Path(cache_dir) / f"{size}-seed{seed}"
    if not (out / "config.json").exists():
        build_tiny_model(out, size=size, seed=seed)
    return str(out)


def trainer_config(config_cls, trainer: str, output_dir: str | os.PathLike, *, preset="full", gpu=None, **kwargs):
    """Build a trainer's config (TRL's or rlhfkit's) with rlhfkit's precedence: precision < presets < ``kwargs``.

    ``trainer`` (``sft``, ``reward``, ``ppo``, ``grpo``) selects the GPU-size preset's row.

    >>> cfg = trainer_config(SFTConfig, "sft", "runs/sft", preset="qlora", gpu=24, learning_rate=1e-4)
    """
    method = method_preset(preset) if isinstance(preset, str) else preset
    merged: dict[str, Any] = {**precision_kwargs(), **method.trainer_kwargs}
    if gpu is not None:
        merged.update(gpu_preset(gpu, trainer))
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
