"""A saved reward-model ensemble: its files and the bootstrap its members may train on.

An *ensemble* is K reward models (members) trained on the same preference pairs from the same SFT model, differing
in seed (score-head initialisation and data order) and, with ``ensemble_bootstrap``, in a bootstrap resample of the
pairs. With the ``lora`` / ``qlora`` presets the members are K adapters + score heads on one base, so at RL time they
cost one base model in memory; with full fine-tuning they are K models. The disagreement of the members on a
response (the spread of their scores) is what the RL monitors watch and what ``reward_aggregation:
mean_minus_std`` subtracts (Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization").

On disk, :func:`rlhfkit.reward.trainer.run_reward` with ``ensemble_size: K > 1`` writes::

    <output_dir>/member-0/model/    (and member-0/adapter/ with LoRA)   ... member-{K-1}/
    <output_dir>/model/ensemble.json    the members (paths relative to it) and each member's score mean / std

``<output_dir>/model`` is what every later stage gets as "the reward model", whether it holds one model or an
``ensemble.json``; :func:`read_ensemble` tells them apart. Members' raw scores have arbitrary offsets (the
Bradley-Terry loss only sees differences), so each member's score is standardised with its own mean and standard
deviation on preference responses before scores are combined or compared
(:func:`rlhfkit.models.scoring.aggregate_rewards`). The config fields are :class:`rlhfkit.reward.config.RewardConfig`'s
``ensemble_size`` / ``ensemble_bootstrap``; scoring with an ensemble is :class:`rlhfkit.models.scoring.EnsembleScorer`.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.io import atomic_path

ENSEMBLE_FILE = "ensemble.json"
MEMBER_DIR = "member-{k}"


def bootstrap(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A bootstrap resample of ``rows``: ``len(rows)`` rows drawn with replacement, reproducible under ``seed``."""
    rng = random.Random(seed)
    return [rows[rng.randrange(len(rows))] for _ in range(len(rows))]


@dataclass
class EnsembleMember:
    """One member of a saved ensemble: its model folder, its LoRA adapter folder (or None) and score statistics."""

    model_dir: Path
    adapter_dir: Path | None
    mean: float
    std: float


def write_ensemble(out_dir: str | os.PathLike, members: list[EnsembleMember], base_model: str) -> Path:
    """Write ``<out_dir>/ensemble.json`` atomically (member paths stored relative to ``out_dir``)."""
    out_dir = Path(out_dir)
    rel = lambda p: None if p is None else os.path.relpath(p, out_dir)  # noqa: E731
    spec = {
        "base_model": base_model,
        "members": [
            {"model_dir": rel(m.model_dir), "adapter_dir": rel(m.adapter_dir), "mean": m.mean, "std": m.std}
            for m in members
        ],
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / ENSEMBLE_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return out_dir


def read_ensemble(path: str | os.PathLike) -> list[EnsembleMember] | None:
    """The members of the ensemble saved at ``path`` (a folder with ``ensemble.json``), or None for one model."""
    file = Path(path) / ENSEMBLE_FILE
    if not file.is_file():
        return None
    spec = json.loads(file.read_text())
    members = []
    for i, m in enumerate(spec["members"]):
        model_dir = (Path(path) / m["model_dir"]).resolve()
        if not (model_dir / "config.json").is_file():
            raise ConfigError(
                f"{file}: member {i} model folder {str(model_dir)!r} is missing; retrain the reward stage"
            )
        adapter = (Path(path) / m["adapter_dir"]).resolve() if m.get("adapter_dir") else None
        if not float(m["std"]) > 0:
            raise ConfigError(f"{file}: member {i} has score std {m['std']}; it must be > 0 (retrain the member)")
        members.append(EnsembleMember(model_dir, adapter, float(m["mean"]), float(m["std"])))
    return members


def ensemble_size(path: str | os.PathLike) -> int:
    """Members of the reward model saved at ``path`` (1 for a single model)."""
    members = read_ensemble(path)
    return 1 if members is None else len(members)
