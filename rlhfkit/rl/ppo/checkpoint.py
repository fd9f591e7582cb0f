"""What a PPO ``checkpoint-N/`` holds beyond the Trainer's own files, so that resuming equals never stopping.

The Trainer writes ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth`` and ``trainer_state.json``; PPO adds
every trainable tensor (:data:`TRAINABLE_WEIGHTS_NAME`: the policy and value weights, or only the adapters and
value head of a shared base) and the KL controller (:data:`PPO_STATE_NAME`, written last).
"""

from __future__ import annotations

import json
import os

from safetensors.torch import load_file, save_file
from torch import nn

from rlhfkit.core.errors import ConfigError
from rlhfkit.rl.ppo import core

TRAINABLE_WEIGHTS_NAME = "trainable.safetensors"  # checkpoint-N/: every trainable tensor, for exact resume
PPO_STATE_NAME = "ppo_state.json"  # checkpoint-N/: the KL controller
KLController = core.FixedKLController | core.AdaptiveKLController


def save_trainable(model: nn.Module, folder: str) -> None:
    """Write every parameter of ``model`` that requires grad to ``folder/trainable.safetensors``."""
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, os.path.join(folder, TRAINABLE_WEIGHTS_NAME), metadata={"format": "pt"})


def load_trainable(model: nn.Module, checkpoint: str, device) -> None:
    """Load ``checkpoint/trainable.safetensors`` into ``model`` on ``device``; refuse a checkpoint that lacks it or
    was written for another layout (a trainable tensor missing, or a tensor this model does not have)."""
    path = os.path.join(checkpoint, TRAINABLE_WEIGHTS_NAME)
    if not os.path.isfile(path):
        raise ConfigError(
            f"resume_from_checkpoint={checkpoint!r} has no {TRAINABLE_WEIGHTS_NAME}; give a PPO checkpoint-N"
        )
    weights = load_file(path, device=str(device))
    result = model.load_state_dict(weights, strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if result.unexpected_keys or trainable - set(weights):
        raise ConfigError(
            f"checkpoint {checkpoint!r} does not match this model layout (unexpected "
            f"{result.unexpected_keys[:2]}, missing {sorted(trainable - set(weights))[:2]}); "
            "resume with the same models and layout"
        )


def save_kl_controller(folder: str, kl_ctl: KLController) -> None:
    """Write the KL controller's state (its current coefficient) to ``folder/ppo_state.json``."""
    with open(os.path.join(folder, PPO_STATE_NAME), "w") as f:
        json.dump({"kl_ctl": kl_ctl.state_dict()}, f)


def load_kl_controller(checkpoint: str, kl_ctl: KLController) -> None:
    """Restore ``kl_ctl`` from ``checkpoint/ppo_state.json``."""
    with open(os.path.join(checkpoint, PPO_STATE_NAME)) as f:
        kl_ctl.load_state_dict(json.load(f)["kl_ctl"])
