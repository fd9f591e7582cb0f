"""Proof that the frozen models (reference, reward) did not change during RL: per-tensor hashes.

:class:`FrozenModelCheck` hashes every parameter at the start and checks them every ``frozen_check_steps`` and at
the end; :func:`frozen_models` finds a trainer's frozen models.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from rlhfkit.core.errors import RlhfkitError

logger = logging.getLogger(__name__)


class FrozenModelError(RlhfkitError, RuntimeError):
    """A model that must stay frozen (reference, reward) was trainable or changed during training."""


ADAPTER_PARAMS = (r"\blora_", r"\bmodules_to_save\b")  # exclude these to check a PEFT model's frozen base


def _hash_tensor(h, t) -> None:
    import torch

    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel() and t.device.type != "meta":
        h.update(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy())


def weights_fingerprint(module, exclude: Sequence[str] = ()) -> dict[str, tuple[str, bool]]:
    """Parameter name -> (blake2b-128 of its exact bytes, requires_grad), for every parameter not matching an
    ``exclude`` regex. Bit-exact for any dtype; a bitsandbytes 4-bit parameter hashes its packed bytes and its
    quantisation state (absmax, ...). Costs about one second per GB on one CPU core (tensors are copied to CPU
    one at a time)."""
    skip = re.compile("|".join(exclude)) if exclude else None
    out = {}
    for name, p in module.named_parameters():
        if skip is not None and skip.search(name):
            continue
        h = hashlib.blake2b(digest_size=16)
        _hash_tensor(h, p.data)
        quant_state = getattr(p, "quant_state", None)
        if quant_state is not None and hasattr(quant_state, "as_dict"):
            for key, value in sorted(quant_state.as_dict(packed=True).items()):
                if hasattr(value, "detach"):
                    h.update(key.encode())
                    _hash_tensor(h, value)
        out[name] = (h.hexdigest(), bool(p.requires_grad))
    return out


def _names(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def verify_frozen(label: str, module, reference: Mapping[str, tuple[str, bool]], exclude: Sequence[str] = ()) -> None:
    """Raise :class:`FrozenModelError` naming every parameter of ``module`` whose bytes differ from ``reference``
    (a :func:`weights_fingerprint`), that requires grad, or that appeared / disappeared."""
    now = weights_fingerprint(module, exclude)
    changed = [n for n in reference if n in now and now[n][0] != reference[n][0]]
    trainable = [n for n, (_, grad) in now.items() if grad]
    missing, added = [n for n in reference if n not in now], [n for n in now if n not in reference]
    problems = []
    if changed:
        problems.append(f"{len(changed)} of {len(reference)} tensors changed ({_names(changed)})")
    if trainable:
        problems.append(f"{len(trainable)} tensors require grad ({_names(trainable)})")
    if missing or added:
        problems.append(f"parameters appeared/disappeared ({_names(missing + added)})")
    if problems:
        raise FrozenModelError(
            f"{label} model is not frozen: {'; '.join(problems)}. The KL penalty was measured against a moving "
            f"target, so this run's KL numbers are meaningless. Pass a separate copy with "
            f"{label}.requires_grad_(False), keep it out of the optimizer, and retrain."
        )


class FrozenModelCheck(TrainerCallback):
    """Proves the reference (and reward) models stay frozen: bit-identical parameters, ``requires_grad`` False.

    At train begin (every process) it raises :class:`FrozenModelError` if a parameter of these models is in the
    optimizer, then sets ``requires_grad=False`` on the rest (TRL's GRPO builds its reference with gradients on,
    though it only ever runs it under ``no_grad``). On the main process it then fingerprints the models
    (:func:`weights_fingerprint`) and verifies them at train end and, with ``every_n_steps``, every N steps.

    Args:
        models: label -> module, e.g. ``{"reference": ref, "reward": rm}``.
        every_n_steps: also verify at each multiple of this global step (0: only at the end).
        exclude: label -> regexes of parameter names not to check (e.g. a PEFT model's trainable adapters:
            :data:`ADAPTER_PARAMS`).
    """

    def __init__(
        self, models: Mapping[str, Any], every_n_steps: int = 0, exclude: Mapping[str, Sequence[str]] | None = None
    ):
        self.models = dict(models)
        self.every_n_steps = every_n_steps
        self.exclude = {label: tuple((exclude or {}).get(label, ())) for label in self.models}
        self.fingerprints: dict[str, dict[str, tuple[str, bool]]] = {}

    def _params(self, label):
        skip = re.compile("|".join(self.exclude[label])) if self.exclude[label] else None
        return [(n, p) for n, p in self.models[label].named_parameters() if skip is None or not skip.search(n)]

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        in_optimizer = {id(p) for group in getattr(optimizer, "param_groups", []) for p in group["params"]}
        for label in self.models:
            params = self._params(label)
            trained = [n for n, p in params if id(p) in in_optimizer]
            if trained:
                raise FrozenModelError(
                    f"{label} model has {len(trained)} tensors in the optimizer ({_names(trained)}): it would be "
                    f"trained and the KL constraint would be meaningless. Is {label} the policy object itself or a "
                    f"view of its weights? Pass a separate copy with {label}.requires_grad_(False)."
                )
            thawed = [n for n, p in params if p.requires_grad]
            for _, p in params:
                p.requires_grad_(False)
            if thawed and state.is_world_process_zero:
                logger.info(
                    "monitor: froze %d tensors of the %s model (none was in the optimizer)", len(thawed), label
                )
        if state.is_world_process_zero:
            self.fingerprints = {
                label: weights_fingerprint(m, self.exclude[label]) for label, m in self.models.items()
            }

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self.verify()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.verify()
            logger.info("monitor: %s unchanged by training (bit-exact)", " and ".join(self.models))

    def verify(self) -> None:
        """Raise :class:`FrozenModelError` if any model changed since train begin."""
        for label, module in self.models.items():
            if label in self.fingerprints:
                verify_frozen(label, module, self.fingerprints[label], self.exclude[label])


def frozen_models(trainer) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """The models a trainer must not change, and parameters to skip in them, for rlhfkit PPO and TRL GRPO.

    * a separate reference (``trainer.ref_model``), else the PEFT policy's base (the reference is the policy with
      its adapters disabled; every parameter trainable now is skipped -- with a shared base that is the policy and
      value adapters, so the reward adapter is checked too);
    * reward models: ``trainer.reward_model`` / ``trainer.reward_fn`` (PPO) and every ``nn.Module`` in
      ``trainer.reward_funcs`` (GRPO), or a reward function's ``.model`` (rlhfkit's ``RewardModelScorer``) or
      ``.models`` (an :class:`~rlhfkit.models.scoring.EnsembleScorer`'s member models).
    """
    from torch import nn

    models, exclude = {}, {}
    ref = getattr(trainer, "ref_model", None)
    if isinstance(ref, nn.Module):
        models["reference"] = ref
    else:
        policy = getattr(trainer, "policy", None)  # rlhfkit PPO: the PEFT model (also with a shared base)
        policy = trainer.model if policy is None else policy
        if hasattr(policy, "peft_config"):
            models["reference"] = policy
            exclude["reference"] = tuple(f"^{re.escape(n)}$" for n, p in policy.named_parameters() if p.requires_grad)
    candidates = [getattr(trainer, name, None) for name in ("reward_model", "reward_fn")]
    rewards = []
    for r in [*candidates, *(getattr(trainer, "reward_funcs", None) or [])]:
        # a module, a reward function's .model (RewardModelScorer) or .models (an ensemble's member models)
        rewards += [r] if isinstance(r, nn.Module) else getattr(r, "models", None) or [getattr(r, "model", None)]
    seen = {id(m) for m in models.values()}
    rewards = [r for r in rewards if isinstance(r, nn.Module) and id(r) not in seen]
    for i, r in enumerate(rewards):
        models["reward" if len(rewards) == 1 else f"reward_{i}"] = r
    return models, exclude
