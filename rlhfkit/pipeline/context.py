"""What a pipeline stage runs in: :class:`StageContext` (config, manifest, earlier outputs, the process group)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import RlhfkitError
from rlhfkit.pipeline.config import PipelineConfig, round_stage
from rlhfkit.pipeline.manifest import Manifest

# Stages that only read data and evaluate run on the main process; the training stages run on every process.
# A round's stages (``round-2/rm_eval``) go by their last part; a round's comparisons (sampling) too.
MAIN_PROCESS_STAGES = ("comparisons", "preferences", "rm_eval", "final_eval")


@dataclass
class StageContext:
    """What a stage function gets: the config, the manifest, earlier stages' outputs, a progress hook, and the
    process group (``state``: accelerate's ``PartialState`` under ``torchrun`` / ``accelerate launch``, else None)."""

    cfg: PipelineConfig
    manifest: Manifest
    outputs: dict[str, dict[str, Any]]
    say: Callable[[str], None]
    state: Any = None

    def dir(self, stage: str) -> Path:
        return self.cfg.output_dir / stage

    def latest(self, stage: str) -> dict[str, Any]:
        """The outputs of the last round's ``stage`` (``reward``, ``rl``, ...): round ``rounds.count``'s, or the
        pipeline's own stage's when there is one round."""
        return self.outputs[round_stage(self.cfg.rounds.count, stage)]

    @staticmethod
    def main_only(stage: str) -> bool:
        """Whether ``stage`` runs on the main process only (the others wait)."""
        return stage.split("/")[-1] in MAIN_PROCESS_STAGES

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def share_error(self, error: BaseException | None = None) -> None:
        """A sync point of every process: the main one says whether it failed (``error``), the others raise it too
        (so they do not wait at the next barrier for a main process that has stopped)."""
        if self.state is None:
            return
        from accelerate.utils import broadcast_object_list

        box = [None if error is None else (str(error) or type(error).__name__)]
        broadcast_object_list(box, from_process=0)
        if not self.is_main and box[0] is not None:
            raise RlhfkitError(f"the main process stopped: {box[0]}")

    def main_process_first(self):
        """The main process runs the block first (e.g. building a lab model once), then the others."""
        return contextlib.nullcontext() if self.state is None else self.state.main_process_first()


class GateFailed(RlhfkitError):
    """The reward model is too weak to steer RL (override with gate.override: true)."""


class WaitingForLabels(Exception):  # noqa: N818 -- not an error: the run pauses for people
    """A stage stopped for people's votes (``preferences.labels: people``). Not an error: the runner records the stage
    as ``waiting for labels`` (:data:`rlhfkit.pipeline.manifest.WAITING`, with ``waiting``: these ``details``), stops,
    and the CLI exits 0; the same ``rlhfkit run`` resumes the stage once enough votes exist."""

    def __init__(self, message: str, details: dict[str, Any]):
        super().__init__(message)
        self.details = details


def distributed_state():
    """accelerate's ``PartialState`` when launched with several processes (``torchrun``, ``accelerate launch``), else
    None. ``load_config`` has usually created the process group already, through the first TRL config it builds
    (with ``sft.ddp_timeout``, 30 minutes by default: the longest a process may wait for the main one's data and
    evaluation stages; raise it for large hub datasets or long evaluations). Otherwise it is created here, with the
    device the trainers will use (gloo on a CPU-only machine). The processes must share ``output_dir``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
