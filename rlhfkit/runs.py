"""TODO docstring."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import DataError
from rlhfkit.models.loading import (
    save_final,
)
from rlhfkit.monitors import HealthMonitor
from rlhfkit.rl.healthy import return_healthy, returns_start, save_starting_policy

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


def train_and_save(
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






def prompt_dataset(data):
    """A Dataset with a ``prompt`` column from a Dataset, a list of row dicts or a list of prompt strings."""
    if isinstance(data, Sequence) and data and isinstance(data[0], str):
        data = [{"prompt": p} for p in data]
    return as_dataset(data, "train_dataset", ("prompt",))
