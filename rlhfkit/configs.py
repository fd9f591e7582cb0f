"""Recipe arguments: rlhfkit's small dataclasses beside TRL's configs, and parsing with presets.

Recipes parse ``(ModelArguments, DataArguments, <TRL config>)`` with TRL's own ``TrlParser`` from a
YAML file plus command-line overrides. :func:`parse_recipe` adds rlhfkit's precedence::

    hardware precision  <  method preset  <  GPU-size preset  <  YAML  <  command line

by reading ``preset`` and ``gpu`` first (from the command line, else the YAML) and installing the
presets as parser defaults, so a YAML key or a flag always wins.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhfkit.errors import ConfigError

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


def parse_recipe(stage: str, dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse a recipe's dataclasses with TRL's ``TrlParser``, presets installed as defaults.

    Args:
        stage: ``sft`` | ``reward`` | ``ppo`` | ``grpo`` (selects the GPU-size preset's fields).
        dataclass_types: the recipe's dataclasses, e.g. ``(ModelArguments, DataArguments, SFTConfig)``.
        argv: arguments (default ``sys.argv[1:]``), typically ``--config configs/lab/sft.yaml [--key value ...]``.
    """
    from trl import TrlParser

    from rlhfkit.models import precision_kwargs
    from rlhfkit.presets import gpu_preset, method_preset

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
        defaults.update(gpu_preset(gpu, stage))
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
    from rlhfkit.lab import build_tiny_model

    size = name_or_path[len(LAB_PREFIX) :]
    out = Path(cache_dir) / f"{size}-seed{seed}"
    if not (out / "config.json").exists():
        build_tiny_model(out, size=size, seed=seed)
    return str(out)


_FILE_KINDS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def is_data_file(source: str) -> bool:
    """Whether ``source`` names a data file (by its suffix), as opposed to a dataset folder or a hub dataset id."""
    return any(s in _FILE_KINDS for s in Path(str(source)).suffixes)


def load_table(source: str, split: str = "train"):
    """A ``datasets.Dataset`` from a local file (.jsonl[.gz], .json, .parquet, .csv), a local dataset folder
    (``datasets.load_dataset`` layout) or a hub dataset id."""
    from datasets import load_dataset

    kind = next((_FILE_KINDS[s] for s in Path(source).suffixes if s in _FILE_KINDS), None)
    if kind is not None:
        if not os.path.isfile(source):
            raise ConfigError(f"dataset={source!r}: no such file")
        return load_dataset(kind, data_files=source, split="train")
    if os.path.isfile(source):
        raise ConfigError(f"dataset={source!r}: unsupported file type; use .jsonl, .jsonl.gz, .json, .parquet or .csv")
    try:
        return load_dataset(source, split=split)
    except (FileNotFoundError, ValueError, ConnectionError) as e:  # no such dataset / offline and not cached / split
        raise ConfigError(
            f"dataset={source!r} split={split!r}: {str(e).splitlines()[0]}; give a data file, a dataset folder or a "
            "hub dataset id (and one of its splits)"
        ) from e


def preference_source(source: str, split: str = "train"):
    """What :func:`rlhfkit.data.load_preferences` reads: a data file as is (its errors name file rows), a dataset
    folder or hub id (e.g. ``Anthropic/hh-rlhf``) loaded as a ``datasets.Dataset`` first."""
    return source if is_data_file(source) else load_table(source, split)


def split_eval(dataset, eval_fraction: float, seed: int, max_samples: int | None = None):
    """Shuffle with ``seed``, cap at ``max_samples``, and hold out ``eval_fraction`` (returns ``(train, eval)``)."""
    dataset = dataset.shuffle(seed=seed)
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    n_eval = int(len(dataset) * eval_fraction)
    if n_eval == 0:
        return dataset, None
    return dataset.select(range(n_eval, len(dataset))), dataset.select(range(n_eval))


def load_sft_data(data: DataArguments, seed: int = 0):
    """SFT rows (``prompt``/``completion``, ``messages`` or ``text``) as ``(train, eval)`` datasets."""
    from datasets import Dataset

    if data.dataset == "lab":
        from rlhfkit.lab import demonstrations

        table = Dataset.from_list(demonstrations(data.lab_samples, seed=seed))
    else:
        table = load_table(data.dataset, data.dataset_split)
        cols = set(table.column_names)
        if not ({"prompt", "completion"} <= cols or "messages" in cols or "text" in cols):
            raise ConfigError(
                f"dataset={data.dataset!r} has columns {sorted(cols)}; SFT needs prompt+completion, messages or text"
            )
    return split_eval(table, data.eval_fraction, seed, data.max_samples)


def load_preference_data(data: DataArguments, seed: int = 0, min_agreement: float = 0.0):
    """Preference pairs (``prompt``/``chosen``/``rejected`` [+ ``agreement``]) as ``(train, eval)`` datasets.

    ``dataset: lab`` asks the lab's simulated labeler pool (5 labelers, noise 0.2) to vote on
    ``lab_samples`` comparisons and keeps the majority label, dropping pairs below ``min_agreement``.
    """
    from rlhfkit.data import from_votes, load_preferences

    if data.dataset == "lab":
        from rlhfkit.lab import LabelerPool, comparison_dataset

        rows = comparison_dataset(data.lab_samples, LabelerPool(5, noise=0.2, seed=seed), seed=seed + 1)
        loaded = from_votes(rows, min_agreement=min_agreement)
    else:
        loaded = load_preferences(preference_source(data.dataset, data.dataset_split), data.dataset_format)
    return split_eval(loaded.to_dataset(), data.eval_fraction, seed, data.max_samples)
