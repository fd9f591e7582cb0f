"""Recipe arguments: rlhfkit's small dataclasses beside TRL's configs, and parsing with presets.

Recipes parse ``(ModelArguments, DataArguments, <TRL config>)`` with TRL's own ``TrlParser`` from a
YAML file plus command-line overrides. :func:`parse_recipe` adds rlhfkit's precedence::

    hardware precision  <  method preset  <  GPU-size preset  <  YAML  <  command line

by reading ``preset`` and ``gpu`` first (from the command line, else the YAML) and installing the
presets as parser defaults, so a YAML key or a flag always wins, and checks every value (:mod:`rlhfkit.core.rules`).
:func:`trainer_config` builds any trainer's config from Python with the same precedence and checks; :func:`read_yaml`
reads a YAML config with one-line errors.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from rlhfkit.core.errors import ConfigError, raise_problems
from rlhfkit.core.hardware import precision_kwargs
from rlhfkit.core.presets import GPU_SIZES, METHODS, gpu_preset, method_preset, method_trainer_kwargs
from rlhfkit.core.rules import AT_LEAST_ONE, FRACTION, Range, check_values, config_problems, unknown_keys
from rlhfkit.lab import TINY_SIZES, build_tiny_model

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

    def __post_init__(self):
        raise_problems(self.problems())

    def problems(self) -> list[str]:
        """The problems of a :class:`ModelArguments` (one line each): preset, GPU size, lab model size."""
        problems = []
        if self.preset not in METHODS:
            problems.append(f"preset={self.preset!r} is not a method preset; choose one of {list(METHODS)}")
        if self.gpu is not None and self.gpu not in GPU_SIZES:
            problems.append(f"gpu={self.gpu!r} is not a GPU-size preset; choose one of {list(GPU_SIZES)} (GB) or null")
        name = str(self.model_name_or_path)
        if name.startswith(LAB_PREFIX) and name[len(LAB_PREFIX) :] not in TINY_SIZES:
            problems.append(
                f"model_name_or_path={name!r} is not a lab model; choose one of "
                f"{[LAB_PREFIX + size for size in TINY_SIZES]}, a local folder or a hub id"
            )
        return problems


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

    RANGES: ClassVar[dict[str, Range]] = {
        "eval_fraction": FRACTION,
        "max_samples": AT_LEAST_ONE,
        "lab_samples": AT_LEAST_ONE,
    }

    def __post_init__(self):
        problems = config_problems(self)
        if self.dataset_format not in PREFERENCE_FORMATS:
            problems.append(
                f"dataset_format={self.dataset_format!r} is not a format; choose one of {PREFERENCE_FORMATS}"
            )
        raise_problems(problems)


# What ``dataset_format`` / ``data.preference_format`` accept (rlhfkit.data.FORMATS, plus auto-detection).
PREFERENCE_FORMATS = ("auto", "hh", "columns", "rankings", "scores", "votes")


def read_yaml(path: str | os.PathLike, what: str = "config file") -> dict[str, Any]:
    """A YAML file's mapping; a missing, unreadable or malformed file is a one-line :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "not found"
        raise ConfigError(f"{what} {str(path)!r} {state}; give the path of a YAML file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{what} {str(path)!r} cannot be read ({e.strerror}); check its permissions") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML{where} ({problem}); fix the syntax there") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {str(path)!r} must be a YAML mapping of keys to values, got {type(raw).__name__}")
    return raw


def _cli_values(argv: list[str]) -> dict[str, Any]:
    """``--key value`` and ``--key=value`` pairs of a command line (flags without a value are left out)."""
    out: dict[str, Any] = {}
    for i, arg in enumerate(argv):
        if not arg.startswith("--") or arg == "--config":
            continue
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            key, value = arg[2:], argv[i + 1]
        else:
            continue
        out[key] = value
    return out


def _parser_error(message: str):
    """argparse's error handler for recipe parsers: one line instead of the usage text and ``SystemExit``."""
    raise ConfigError(f"{message}; see --help for the fields")


def parse_recipe(trainer: str, dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse a recipe's dataclasses with TRL's ``TrlParser``, presets installed as defaults, and validate them.

    Every value given in the YAML or on the command line is checked by type and range (:mod:`rlhfkit.core.rules`)
    before the configs are built, and every built config after (presets included); all problems are raised at once
    in one :class:`ConfigError`. TRL's own config errors become one-line ``ConfigError`` s.

    Args:
        trainer: ``sft`` | ``reward`` | ``ppo`` | ``grpo`` (selects the GPU-size preset's fields).
        dataclass_types: the recipe's dataclasses, e.g. ``(ModelArguments, DataArguments, SFTConfig)``.
        argv: arguments (default ``sys.argv[1:]``), typically ``--config configs/lab/sft.yaml [--key value ...]``.
    """
    from trl import TrlParser

    argv = list(sys.argv[1:] if argv is None else argv)
    config: dict[str, Any] = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a YAML file, e.g. --config configs/lab/sft.yaml")
        config = read_yaml(argv[i + 1])
    given = {**config, **_cli_values(argv)}
    problems = []
    for cls in dataclass_types:
        names = {f.name for f in dataclasses.fields(cls)}
        problems += check_values(cls, {k: v for k, v in given.items() if k in names})[1]
    preset, gpu = given.get("preset") or "full", given.get("gpu")
    if preset not in METHODS:
        problems.append(f"preset={preset!r} is not a method preset; choose one of {list(METHODS)}")
    raise_problems(problems)
    defaults: dict[str, Any] = {**precision_kwargs(), **method_preset(preset).trainer_kwargs}
    if gpu not in (None, "None", "null"):
        defaults.update(gpu_preset(gpu, trainer))
    parser = TrlParser(dataclass_types)
    parser.error = _parser_error  # argparse errors become one line
    known = {f for t in dataclass_types for f in t.__dataclass_fields__}
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in known})
    parsed = _build(lambda: parser.parse_args_and_config(args=argv))
    raise_problems([p for obj in parsed for p in config_problems(obj)])
    return parsed


def _build(make, prefix: str = ""):
    """``make()``, with the errors a config class raises on a bad value (TRL's ``ValueError`` / ``TypeError``)
    turned into a one-line :class:`ConfigError`."""
    try:
        return make()
    except ConfigError as e:
        if not prefix:
            raise
        raise e.prefixed(prefix) from e
    except (TypeError, ValueError) as e:
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ConfigError(f"{prefix}{first}") from e


def resolve_model(name_or_path: str, cache_dir: str | os.PathLike = "runs/lab-models", seed: int = 0) -> str:
    """Turn ``lab:nano`` / ``lab:demo`` into a locally built lab model folder (built once); pass others through."""
    if not name_or_path.startswith(LAB_PREFIX):
        return name_or_path
    size = name_or_path[len(LAB_PREFIX) :]
    out = Path(cache_dir) / f"{size}-seed{seed}"
    if not (out / "config.json").exists():
        build_tiny_model(out, size=size, seed=seed)
    return str(out)


def trainer_config(
    config_cls,
    trainer: str,
    output_dir: str | os.PathLike,
    values: dict[str, Any] | None = None,
    *,
    preset="full",
    gpu=None,
    prefix: str = "",
    **kwargs,
):
    """Build a trainer's config (TRL's or rlhfkit's) with rlhfkit's precedence: precision < presets < values.

    ``trainer`` (``sft``, ``reward``, ``ppo``, ``grpo``, ...) selects the GPU-size preset's row. The values are
    ``values`` (a config section as a dict) updated with ``kwargs``; ``prefix`` (e.g. ``"sft."``) names their section
    in messages. Every value is checked by type and range (:mod:`rlhfkit.core.rules`) before the config is built and
    after; all problems are raised together in one :class:`ConfigError`, as are TRL's own config errors (one line).

    >>> cfg = trainer_config(SFTConfig, "sft", "runs/sft", preset="qlora", gpu=24, learning_rate=1e-4)
    """
    values = {**(values or {}), **kwargs}
    fields = set(config_cls.__dataclass_fields__)
    given, problems = check_values(config_cls, values, prefix)
    name = config_cls.__name__
    unknown = unknown_keys(
        values, fields, prefix, f"the valid ones are {name}'s fields (TRL's docs)", f"{name} field(s)"
    )
    raise_problems(unknown + problems)
    method_kwargs = method_trainer_kwargs(preset) if isinstance(preset, str) else preset.trainer_kwargs
    merged: dict[str, Any] = {**precision_kwargs(), **method_kwargs}
    if gpu is not None:
        merged.update(gpu_preset(gpu, trainer))
    merged.update(given)
    merged = {k: v for k, v in merged.items() if k in fields}
    config = _build(
        lambda: config_cls(output_dir=str(output_dir), **merged), prefix.rstrip(".") + ": " if prefix else ""
    )
    raise_problems(config_problems(config, prefix))
    return config
