"""The RL algorithms, one record each: what the pipeline, the validator, the planner and ``rlhfkit compare`` know of
an algorithm comes from here and nowhere else.

Adding an algorithm is one :class:`Algorithm` record in :data:`ALGORITHMS` plus its module (a config class in a
module that imports no trainer, and a ``run_<name>(model, data, config, ...) -> RunResult``). The record names its
config class and run function by import path, so reading the registry costs nothing: ``rlhfkit plan`` and
``rlhfkit --help`` import no TRL, and a config check imports no trainer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


def load(path: str) -> Any:
    """``"package.module:name"`` -> the object."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Algorithm:
    """One RL algorithm of the ``rl`` stage.

    Attributes:
        name: its ``rl.algorithm`` value, its config section and its folder under ``rlhfkit compare``.
        config: import path of its config class (``module:Class``).
        run: import path of its training run (``module:function``, returns a :class:`~rlhfkit.runs.RunResult`).
        uses_reward_model: it optimises the reward model, so the reward-model gate protects it (DPO trains on the
            preference pairs; the reward model only scores its final evaluation).
        length_field: the config field that caps a sampled response's tokens; the final evaluation samples as many.
        eval_temperature: the final evaluation's default temperature; None: the config's ``temperature``.
        samples: it samples responses to prompts while training (the planner holds prompt + response sequences).
        groups: it samples ``num_generations`` completions per prompt (GRPO's and RLOO's group baseline).
        seq_len_field: the config field the planner reads as the sequence length.
    """

    name: str
    config: str
    run: str
    uses_reward_model: bool
    length_field: str
    eval_temperature: float | None = None
    samples: bool = True
    groups: bool = False
    seq_len_field: str = ""

    def config_class(self) -> type:
        return load(self.config)

    def runner(self):
        return load(self.run)

    @property
    def planner_seq_field(self) -> str:
        return self.seq_len_field or self.length_field


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("ppo", "rlhfkit.rl.ppo.config:PPOConfig", "rlhfkit.rl.ppo.run:run_ppo", True, "response_length"),
        Algorithm(
            "grpo",
            "rlhfkit.rl.configs:GRPOConfig",
            "rlhfkit.rl.grpo_rloo:run_grpo",
            True,
            "max_completion_length",
            groups=True,
        ),
        Algorithm(
            "rloo",
            "rlhfkit.rl.configs:RLOOConfig",
            "rlhfkit.rl.grpo_rloo:run_rloo",
            True,
            "max_completion_length",
            groups=True,
        ),
        # DPO samples only to measure its KL for the monitors (at temperature 1); the planner reads its pair length
        Algorithm(
            "dpo",
            "rlhfkit.rl.configs:DPOConfig",
            "rlhfkit.rl.dpo:run_dpo",
            False,
            "kl_max_new_tokens",
            eval_temperature=1.0,
            samples=False,
            seq_len_field="max_length",
        ),
        Algorithm(
            "best_of_n",
            "rlhfkit.rl.configs:BestOfNConfig",
            "rlhfkit.rl.best_of_n:run_best_of_n",
            True,
            "max_completion_length",
        ),
    )
}
RL_ALGORITHMS: tuple[str, ...] = tuple(ALGORITHMS)  # every value of rl.algorithm, in the order compare reports them
USES_REWARD_MODEL: tuple[str, ...] = tuple(a.name for a in ALGORITHMS.values() if a.uses_reward_model)
