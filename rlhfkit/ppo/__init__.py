"""PPO for RLHF (InstructGPT's RL stage), rlhfkit's own: TRL deleted its ``PPOTrainer`` in 1.13.

* :mod:`rlhfkit.ppo.config` -- :class:`PPOConfig` (TRL 1.12's names and defaults);
* :mod:`rlhfkit.ppo.core` -- the pure tensor math (whiten, per-token KL, GAE, clipped losses, KL controllers);
* :mod:`rlhfkit.ppo.layouts` -- separate models or one shared base, :func:`load_ppo_models`;
* :mod:`rlhfkit.ppo.trainer` -- :class:`PPOTrainer`, the loop (rollout -> advantages -> PPO epochs).
"""

from rlhfkit.ppo.config import PPOConfig
from rlhfkit.ppo.layouts import (
    PolicyAndValue,
    SharedBase,
    build_shared_base,
    load_ppo_models,
    per_token_scores,
    use_adapter,
)
from rlhfkit.ppo.trainer import PPOTrainer, refuse_parameter_sharding

__all__ = [
    "PPOConfig",
    "PPOTrainer",
    "PolicyAndValue",
    "SharedBase",
    "build_shared_base",
    "load_ppo_models",
    "per_token_scores",
    "refuse_parameter_sharding",
    "use_adapter",
]
