"""Deprecated: the training runs moved to :mod:`rlhfkit.train` and ``stage_config`` to
:func:`rlhfkit.config.trainer_config`. This module re-exports them for code written against rlhfkit 0.1's README."""

import warnings

from rlhfkit.config import trainer_config as stage_config
from rlhfkit.grpo import grpo_config
from rlhfkit.train import run_grpo, run_ppo, run_reward, run_sft

warnings.warn(
    "rlhfkit.stages is deprecated: import run_sft / run_reward / run_ppo / run_grpo from rlhfkit.train and "
    "trainer_config (was stage_config) from rlhfkit.config",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["grpo_config", "run_grpo", "run_ppo", "run_reward", "run_sft", "stage_config"]
