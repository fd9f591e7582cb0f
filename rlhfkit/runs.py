"""What every training run shares: its result (:class:`RunResult`), its data as a ``datasets.Dataset``, resuming from
the newest ``checkpoint-N`` and the train-evaluate-save sequence (:func:`train_and_save`).

Every run writes into its ``config.output_dir``: ``checkpoint-N/`` while training (a rerun resumes from the last one)
and ``model/``, the final model and tokenizer written atomically (:func:`rlhfkit.models.loading.save_final`), so a
folder named ``model`` is always complete. An RL run trains with the monitors and may return the average of its last
healthy checkpoints instead (:func:`rlhfkit.rl.healthy.train_monitored`).
"""

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
from rlhfkit.monitors.progress import show_progress

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


def resume_and_train(trainer, config, name: str) -> dict[str, float]:
    """``trainer.train()``, resuming from the newest ``checkpoint-N`` of ``config.output_dir`` unless the config names
    one; returns the training metrics."""
    resume = last_checkpoint(config.output_dir) if config.resume_from_checkpoint is None else None
    if resume:
        logger.info("%s: resuming from %s", name, resume)
    return dict(trainer.train(resume_from_checkpoint=config.resume_from_checkpoint or resume).metrics)


def eval_metrics(trainer, eval_dataset, suffix: str = "") -> dict[str, float]:
    """The trainer's evaluation on ``eval_dataset`` (none: no metrics), keys suffixed (``eval_loss_before``)."""
    if eval_dataset is None:
        return {}
    out = trainer.evaluate()
    return {f"{k}{suffix}": v for k, v in out.items() if "runtime" not in k and (not suffix or k.startswith("eval_"))}


def run_result(trainer, name: str, model_dir: Path, metrics: dict[str, Any]) -> RunResult:
    return RunResult(trainer=name, model_dir=model_dir, metrics=metrics, log_history=list(trainer.state.log_history))


def train_and_save(trainer, tokenizer, config, name, base_model, model_kind, eval_dataset) -> RunResult:
    """Evaluate, train (resuming), evaluate again and save ``model/`` (:func:`rlhfkit.models.loading.save_final`);
    the console shows one progress bar and a result line (:func:`rlhfkit.monitors.progress.show_progress`)."""
    show_progress(trainer, name)
    metrics = eval_metrics(trainer, eval_dataset, "_before")
    metrics.update(resume_and_train(trainer, config, name))
    metrics.update(eval_metrics(trainer, eval_dataset))
    model_dir = save_final(trainer, tokenizer, config.output_dir, base_model=base_model, model_kind=model_kind)
    return run_result(trainer, name, model_dir, metrics)


def remove_checkpoints(output_dir: str | os.PathLike) -> None:
    """Delete ``checkpoint-N`` folders once a run's final model is saved (they can be large)."""
    for path in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(path, ignore_errors=True)


def prompt_dataset(data):
    """A Dataset with a ``prompt`` column from a Dataset, a list of row dicts or a list of prompt strings."""
    if isinstance(data, Sequence) and data and isinstance(data[0], str):
        data = [{"prompt": p} for p in data]
    return as_dataset(data, "train_dataset", ("prompt",))
