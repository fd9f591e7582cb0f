"""Every training run in one place: ``from rlhfkit.train import run_ppo``.

Each run builds a trainer from its config and an rlhfkit preset, trains, and saves ``<output_dir>/model/``
atomically (``checkpoint-N/`` while training; a rerun resumes from the last one); each returns a
:class:`~rlhfkit.runs.RunResult`. They live with their step of the recipe: :mod:`rlhfkit.sft`,
:mod:`rlhfkit.reward.trainer`, :mod:`rlhfkit.rl.ppo.run`, :mod:`rlhfkit.rl.grpo_rloo`, :mod:`rlhfkit.rl.dpo`,
:mod:`rlhfkit.rl.best_of_n`.
"""

from rlhfkit.reward.trainer import run_reward
from rlhfkit.rl.best_of_n import run_best_of_n
from rlhfkit.rl.dpo import run_dpo
from rlhfkit.rl.grpo_rloo import run_grpo, run_rloo
from rlhfkit.rl.ppo.run import run_ppo
from rlhfkit.runs import RunResult
from rlhfkit.sft import run_sft

__all__ = ["RunResult", "run_best_of_n", "run_dpo", "run_grpo", "run_ppo", "run_reward", "run_rloo", "run_sft"]
