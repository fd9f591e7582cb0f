"""PPO for RLHF (InstructGPT's RL stage): :class:`PPOConfig` + :class:`PPOTrainer`, in TRL's style.

TRL deleted its ``PPOTrainer`` in 1.13; this is rlhfkit's own, with TRL 1.12's field names, defaults and
metric names (``objective/kl``, ``policy/clipfrac_avg``, ...), so TRL users and rlhfkit's monitors feel at
home. The math lives in :mod:`rlhfkit.ppo_core` (pure, unit-tested tensor functions); this module is the loop.

Supports
--------
* One update = rollout (sample ``response_length`` tokens with ``top_k=0, top_p=1`` at ``temperature``;
  log-probs recomputed by a forward pass at that temperature), reference log-probs, reward scores
  (optionally normalised with rm_eval's ``reward_mean`` / ``reward_std``, minus ``missing_eos_penalty``),
  per-token KL penalty (``k1`` / ``k3``, fixed or adaptive coefficient -- Ziegler et al. 2019), GAE,
  advantage whitening, then ``num_ppo_epochs`` passes over ``num_mini_batches`` shuffled mini-batches with
  gradient accumulation, gradient clipping (``max_grad_norm``) and the Trainer's learning-rate schedule.
* Two model layouts (see :class:`PPOTrainer`): **separate** models (policy, frozen reference, frozen reward
  model, value model initialised from the reward model), or a **shared base** (:func:`build_shared_base`):
  one (optionally 4-bit) base holding the policy LoRA, a value LoRA + head and the reward model as a LoRA +
  head; the reference is the base with adapters disabled.
* Rewards from a reward model (``AutoModelForSequenceClassification``, ``num_labels=1``, read at the last real
  token), a reward adapter on the shared base, or a Python function (TRL's reward-function convention).
* ``transformers`` TrainerCallbacks (``on_train_begin``/``on_step_end``/``on_log``/``on_save``/``on_train_end``;
  a callback can stop training with ``control.should_training_stop``), checkpoints every ``save_steps`` and
  exact resume (weights, optimiser, scheduler, KL coefficient, RNG, step), final policy saved as safetensors.

Assumptions
-----------
* Decoder-only causal LMs; reward and value models expose their transformer as ``base_model_prefix`` and a
  ``score`` head (Llama, Qwen2, Mistral, Gemma, GPT-NeoX, GPT-2 ... all do).
* The reward model shares the policy's tokenizer unless ``reward_processing_class`` is given (then the
  response text is re-tokenised for it).
* ``pad_token_id != eos_token_id`` (refused otherwise: padding would be indistinguishable from stopping).
* Prompts fit the context together with ``response_length`` (they are not truncated).

Deliberately omitted
--------------------
* PPO-ptx (InstructGPT's pretraining-loss mix), value-function early stopping, approx-KL early stopping.
* TRL 1.12's evaluation loop / completion tables (a few samples are logged every
  ``total updates / num_sample_generations`` updates instead), vLLM generation, and DeepSpeed ZeRO-3 / FSDP
  (refused with a clear error: rollouts would need the sharded policy gathered). DDP is tested on 2 CPU processes;
  ZeRO-1/2 keep whole parameters on each GPU but are untested without GPUs.
* Reference *adapters* (``ref_adapter_name``): the reference is always the base with adapters disabled.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from transformers import GenerationConfig, Trainer, TrainingArguments

from rlhfkit import ppo_core as core
from rlhfkit.errors import ConfigError

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS_NAME = "trainable.safetensors"  # checkpoint-N/: every trainable tensor, for exact resume
PPO_STATE_NAME = "ppo_state.json"  # checkpoint-N/: the KL controller


# ============================================================================================== config
@dataclass
class PPOConfig(TrainingArguments):
    r"""Configuration of :class:`PPOTrainer`: ``TrainingArguments`` plus PPO's fields (TRL 1.12's names).

    Batch sizes follow TRL 1.12: one update samples ``per_device_train_batch_size * gradient_accumulation_steps``
    prompts per process; each PPO epoch splits them into ``num_mini_batches`` mini-batches (one optimiser
    step each), processed in micro-batches of ``per_device_train_batch_size``.

    Parameters:
        num_ppo_epochs (`int`, defaults to `4`): passes over each rollout batch (TRL 1.12).
        num_mini_batches (`int`, defaults to `1`): optimiser steps per PPO epoch (TRL 1.12).
        total_episodes (`int`, *optional*): prompts to sample in total; defaults to
            ``num_train_epochs * len(train_dataset)`` (TRL 1.12).
        local_rollout_forward_batch_size (`int`, defaults to `64`): sequences per no-grad generation / forward
            chunk in the rollout (TRL 1.12).
        num_sample_generations (`int`, defaults to `10`): how many times during training a few sampled
            completions are logged (0: never) (TRL 1.12).
        response_length (`int`, defaults to `53`): maximum new tokens per response (TRL 1.12).
        stop_token (`"eos"` or `None`, defaults to `None`): ``"eos"`` ends responses at the tokenizer's EOS;
            mutually exclusive with ``stop_token_id`` (TRL 1.12).
        stop_token_id (`int`, *optional*): token id that ends a response (TRL 1.12).
        temperature (`float`, defaults to `0.7`): sampling temperature; log-probs use the same (TRL 1.12).
        missing_eos_penalty (`float`, *optional*): subtracted from the score of responses without EOS (TRL 1.12).
        kl_coef (`float`, defaults to `0.05`): KL penalty coefficient beta, or its initial value with
            ``target_kl`` (TRL 1.12; InstructGPT used 0.02).
        kl_estimator (`"k1"` or `"k3"`, defaults to `"k1"`): per-token KL estimator (TRL 1.12; see
            http://joschu.net/blog/kl-approx.html).
        target_kl (`float`, *optional*): adapt ``kl_coef`` to keep the mean sequence KL near this value
            (Ziegler et al. 2019's adaptive controller); None keeps it fixed.
        kl_horizon (`int`, defaults to `10000`): the adaptive controller's horizon in episodes (Ziegler et al. 2019).
        cliprange (`float`, defaults to `0.2`): PPO policy clip range (TRL 1.12; Schulman et al. 2017).
        vf_coef (`float`, defaults to `0.1`): value-loss coefficient (TRL 1.12).
        cliprange_value (`float`, defaults to `0.2`): value clip range (TRL 1.12).
        gamma (`float`, defaults to `1.0`): discount factor (TRL 1.12; InstructGPT: undiscounted).
        lam (`float`, defaults to `0.95`): GAE lambda (TRL 1.12).
        whiten_rewards (`bool`, defaults to `False`): whiten per-token rewards (keeping their mean) before GAE
            (TRL 1.12).
        reward_mean (`float`, *optional*): subtract from reward-model scores; take ``reward_mean`` from the
            rm_eval report. Set together with ``reward_std``.
        reward_std (`float`, *optional*): divide reward-model scores by it; take ``reward_std`` from the rm_eval
            report.
        learning_rate (`float`, defaults to `3e-6`): TRL 1.12's PPO default (not TrainingArguments' 5e-5).
        logging_steps (`float`, defaults to `1`): log every update: updates are few and monitors read each one.
        bf16 / fp16 (`bool`, *optional*): None picks them from the hardware
            (:func:`rlhfkit.models.precision_kwargs`): bf16 only on GPUs that support it, never on CPU.
        use_cpu (`bool`, *optional*): None picks it from the hardware: True on a machine without a GPU, which is
            also what makes ``torchrun`` start real (gloo) DDP there rather than independent copies.
    """

    learning_rate: float = field(default=3e-6, metadata={"help": "AdamW learning rate (TRL 1.12's PPO default)."})
    logging_steps: float = field(
        default=1, metadata={"help": "Log every N updates (default 1: monitors read every update)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None: chosen from the hardware (never on CPU)."}
    )
    fp16: bool | None = field(
        default=None, metadata={"help": "fp16 mixed precision; None: chosen from the hardware (never on CPU)."}
    )
    use_cpu: bool | None = field(
        default=None, metadata={"help": "Train on the CPU; None: chosen from the hardware (True without a GPU)."}
    )
    num_ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout batch (TRL 1.12)."})
    num_mini_batches: int = field(default=1, metadata={"help": "Optimiser steps per PPO epoch (TRL 1.12)."})
    total_episodes: int | None = field(
        default=None,
        metadata={"help": "Prompts to sample in total; default num_train_epochs * len(train_dataset) (TRL 1.12)."},
    )
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Sequences per no-grad generation / forward chunk in the rollout (TRL 1.12)."}
    )
    num_sample_generations: int = field(
        default=10,
        metadata={"help": "How many times during training sampled completions are logged; 0: never (TRL 1.12)."},
    )
    response_length: int = field(default=53, metadata={"help": "Maximum new tokens per response (TRL 1.12)."})
    stop_token: Literal["eos"] | None = field(
        default=None,
        metadata={"help": "'eos': responses end at the tokenizer's EOS; exclusive with stop_token_id (TRL 1.12)."},
    )
    stop_token_id: int | None = field(default=None, metadata={"help": "Token id that ends a response (TRL 1.12)."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; log-probs use the same (TRL 1.12)."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses without EOS (TRL 1.12)."}
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "KL penalty beta, or its initial value with target_kl (TRL 1.12; InstructGPT used 0.02)."},
    )
    kl_estimator: Literal["k1", "k3"] = field(
        default="k1", metadata={"help": "Per-token KL estimator: k1 or k3 (TRL 1.12; joschu.net/blog/kl-approx)."}
    )
    target_kl: float | None = field(
        default=None,
        metadata={"help": "Adapt kl_coef towards this mean sequence KL (Ziegler et al. 2019); None: fixed kl_coef."},
    )
    kl_horizon: int = field(
        default=10000, metadata={"help": "Adaptive KL controller horizon in episodes (Ziegler et al. 2019)."}
    )
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy clip range (TRL 1.12)."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value-loss coefficient (TRL 1.12)."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range (TRL 1.12)."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor (TRL 1.12; InstructGPT: undiscounted)."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda (TRL 1.12)."})
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Whiten per-token rewards, keeping their mean, before GAE (TRL 1.12)."}
    )
    reward_mean: float | None = field(
        default=None, metadata={"help": "Subtract from reward-model scores (rm_eval report's reward_mean)."}
    )
    reward_std: float | None = field(
        default=None, metadata={"help": "Divide reward-model scores by it (rm_eval report's reward_std)."}
    )

    def __post_init__(self):
        if self.bf16 is None or self.fp16 is None or self.use_cpu is None:
            from rlhfkit.models import precision_kwargs

            hw = precision_kwargs()
            self.bf16 = hw["bf16"] if self.bf16 is None else self.bf16
            self.fp16 = (hw["fp16"] and not self.bf16) if self.fp16 is None else self.fp16
            self.use_cpu = hw["use_cpu"] if self.use_cpu is None else self.use_cpu
        super().__post_init__()
        problems = []
        if self.stop_token is not None and self.stop_token_id is not None:
            problems.append("stop_token and stop_token_id are both set; set only one")
        if self.stop_token not in (None, "eos"):
            problems.append(f"stop_token={self.stop_token!r} is not supported; use 'eos' or stop_token_id")
        if self.kl_estimator not in ("k1", "k3"):
            problems.append(f"kl_estimator={self.kl_estimator!r} is not supported; use 'k1' or 'k3'")
        if (self.reward_mean is None) != (self.reward_std is None):
            problems.append("reward_mean and reward_std must be set together (both from the rm_eval report)")
        if self.reward_std is not None and self.reward_std <= 0:
            problems.append(f"reward_std={self.reward_std} must be > 0")
        if self.target_kl is not None and self.target_kl <= 0:
            problems.append(f"target_kl={self.target_kl} must be > 0 (or None for a fixed kl_coef)")
        if self.temperature <= 0:
            problems.append(f"temperature={self.temperature} must be > 0 (PPO needs sampling)")
        if self.response_length < 1 or self.num_ppo_epochs < 1 or self.num_mini_batches < 1:
            problems.append("response_length, num_ppo_epochs and num_mini_batches must be >= 1")
        if self.gradient_accumulation_steps % self.num_mini_batches:
            problems.append(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} must be a multiple of "
                f"num_mini_batches={self.num_mini_batches} (each mini-batch is a whole number of micro-batches)"
            )
        if problems:
            raise ConfigError("PPOConfig: " + "; ".join(problems))


# ============================================================================================== model layouts
@contextlib.contextmanager
def use_adapter(model, adapter_name: str | None) -> Iterator[Any]:
    """Run a peft model with adapter ``adapter_name`` active (None: all adapters disabled, i.e. the base).

    peft's ``set_adapter`` and ``disable_adapter`` also change which weights train (they mark only the active
    adapter trainable). This restores, on exit and also inside, the previously active adapter and every
    parameter's ``requires_grad`` exactly, so switching never changes what the optimiser trains.
    """
    saved = [(p, p.requires_grad) for p in model.parameters()]
    previous = model.active_adapter

    def restore_grads():
        for p, flag in saved:
            if p.requires_grad != flag:
                p.requires_grad_(flag)

    try:
        if adapter_name is None:
            with model.disable_adapter():
                restore_grads()
                yield model
        else:
            if adapter_name != previous:
                model.set_adapter(adapter_name)
            restore_grads()
            yield model
    finally:
        if model.active_adapter != previous:
            model.set_adapter(previous)
        restore_grads()


def _backbone_and_head(model) -> tuple[nn.Module, nn.Module]:
    """The transformer body and ``score`` head of a sequence-classification model (peft-wrapped or not)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, inner.base_model_prefix), inner.score


def per_token_scores(backbone: nn.Module, head: nn.Module, input_ids, attention_mask, position_ids) -> torch.Tensor:
    """``head(last hidden state)`` at every position: ``(B, L)`` float32 (values, or rewards read at one index)."""
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state
    weight = next(head.parameters())
    return head(hidden.to(weight.dtype)).squeeze(-1).float()


class PolicyAndValue(nn.Module):
    """Separate layout: the trainable pair, policy (causal LM, possibly peft) + value model (one-label classifier)."""

    def __init__(self, policy: nn.Module, value_model: nn.Module):
        super().__init__()
        self.policy = policy
        self.value_model = value_model

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int = 0, part: str = "policy"):
        """``part="policy"``: the policy's logits (the last ``logits_to_keep`` positions); ``"value"``: values."""
        if part == "value":
            return self.values(input_ids, attention_mask, position_ids)
        return self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=logits_to_keep,
            use_cache=False,
        ).logits

    def values(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        return per_token_scores(*_backbone_and_head(self.value_model), input_ids, attention_mask, position_ids)


class SharedBase(nn.Module):
    """Shared-base layout: one peft model whose adapters are the policy, the value model and (optionally) the
    reward model, plus the value and reward heads. The reference model is the base with adapters disabled.

    Build it with :func:`build_shared_base`. Attributes: ``model`` (the ``PeftModel``), ``value_head``,
    ``reward_head`` (or None), ``policy_adapter`` / ``value_adapter`` / ``reward_adapter`` (names).
    """

    def __init__(
        self,
        model,
        value_head: nn.Module,
        reward_head: nn.Module | None = None,
        *,
        policy_adapter: str = "default",
        value_adapter: str = "value",
        reward_adapter: str | None = None,
    ):
        super().__init__()
        names = [policy_adapter, value_adapter] + ([reward_adapter] if reward_adapter else [])
        missing = [n for n in names if n not in model.peft_config]
        if missing:
            raise ConfigError(f"SharedBase: adapter(s) {missing} not in the peft model {sorted(model.peft_config)}")
        if (reward_adapter is None) != (reward_head is None):
            raise ConfigError("SharedBase: reward_adapter and reward_head must be given together")
        self.model = model
        self.value_head = value_head
        self.reward_head = reward_head
        self.policy_adapter, self.value_adapter, self.reward_adapter = policy_adapter, value_adapter, reward_adapter

    @property
    def backbone(self) -> nn.Module:
        inner = self.model.get_base_model()
        return getattr(inner, inner.base_model_prefix)

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int = 0, part: str = "policy"):
        """As :meth:`PolicyAndValue.forward`. Run backward inside ``use_adapter`` of the same adapter: activation
        checkpointing recomputes the forward during backward, with whichever adapter is active then."""
        if part == "value":
            return self.values(input_ids, attention_mask, position_ids)
        with use_adapter(self.model, self.policy_adapter):
            return self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=logits_to_keep,
                use_cache=False,
            ).logits

    def values(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        with use_adapter(self.model, self.value_adapter):
            return per_token_scores(self.backbone, self.value_head, input_ids, attention_mask, position_ids)

    def rewards(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        with use_adapter(self.model, self.reward_adapter):
            return per_token_scores(self.backbone, self.reward_head, input_ids, attention_mask, position_ids)


def _adapter_parameters(peft_model, adapter_name: str) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in peft_model.named_parameters() if "lora_" in n and f".{adapter_name}." in n]


def build_shared_base(
    base_model,
    lora_config=None,
    *,
    reward_adapter: str | os.PathLike | None = None,
    value_from_reward: bool = True,
    value_adapter: str = "value",
) -> SharedBase:
    """Build the shared-base layout on one causal LM (optionally loaded 4-bit).

    Args:
        base_model: the SFT causal LM (``AutoModelForCausalLM``), or a ``PeftModel`` whose active adapter is the
            policy (then ``lora_config`` may be None).
        lora_config: the policy's ``peft.LoraConfig`` (``task_type="CAUSAL_LM"``); the value adapter uses the
            same configuration unless it is copied from the reward adapter.
        reward_adapter: folder of the reward model's LoRA adapter (a ``SEQ_CLS`` LoRA trained on this same base,
            with its ``score`` head in ``modules_to_save`` -- what rlhfkit's reward stage writes to ``adapter/``).
            It is loaded frozen as adapter ``"reward"`` with a frozen head. None: rewards come from elsewhere
            (a separate reward model or a reward function passed to :class:`PPOTrainer`).
        value_from_reward: initialise the value adapter and head from the reward adapter (InstructGPT initialises
            the value function from the reward model); otherwise a fresh adapter and a zero head.
    Returns:
        a :class:`SharedBase` whose trainable weights are exactly the policy adapter, the value adapter and the
        value head.
    """
    from peft import PeftModel, get_peft_model

    if isinstance(base_model, PeftModel):
        model = base_model
    else:
        if lora_config is None:
            raise ConfigError("build_shared_base: lora_config is required for a plain base model; pass a LoraConfig")
        model = get_peft_model(base_model, lora_config)
    policy_adapter = model.active_adapter
    config = model.get_base_model().config.get_text_config()
    device = next(model.parameters()).device

    reward_head = None
    reward_name = None
    if reward_adapter is not None:
        reward_name = "reward"
        reward_cfg, reward_weights, head_weight = _read_reward_adapter(reward_adapter)
        model.add_adapter(reward_name, reward_cfg)
        _load_adapter_weights(model, reward_weights, reward_name, reward_adapter)
        reward_head = nn.Linear(config.hidden_size, 1, bias=False, device=device)
        with torch.no_grad():
            reward_head.weight.copy_(head_weight.reshape(1, -1))
    value_head = nn.Linear(config.hidden_size, 1, bias=False, device=device)
    if reward_adapter is not None and value_from_reward:
        value_cfg = copy.deepcopy(reward_cfg)
        value_cfg.inference_mode = False
        model.add_adapter(value_adapter, value_cfg)
        _load_adapter_weights(model, reward_weights, value_adapter, reward_adapter)
        with torch.no_grad():
            value_head.weight.copy_(reward_head.weight)
    else:
        model.add_adapter(value_adapter, copy.deepcopy(model.peft_config[policy_adapter]))
        nn.init.zeros_(value_head.weight)  # V = 0 to start: a neutral baseline

    model.set_adapter(policy_adapter)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in (policy_adapter, value_adapter):
        for _, p in _adapter_parameters(model, name):
            p.requires_grad_(True)
    value_head.requires_grad_(True)
    if reward_head is not None:
        reward_head.requires_grad_(False)
    return SharedBase(
        model,
        value_head,
        reward_head,
        policy_adapter=policy_adapter,
        value_adapter=value_adapter,
        reward_adapter=reward_name,
    )


def _read_reward_adapter(adapter_dir):
    """A SEQ_CLS LoRA adapter folder -> (CAUSAL_LM LoraConfig, LoRA weights, score head weight)."""
    from peft import PeftConfig
    from safetensors.torch import load_file

    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if not os.path.isfile(path):
        raise ConfigError(
            f"reward_adapter={str(adapter_dir)!r} has no adapter_model.safetensors; give the reward stage's adapter/ "
            "folder (train the reward model with preset lora or qlora)"
        )
    cfg = copy.deepcopy(PeftConfig.from_pretrained(str(adapter_dir)))
    if getattr(cfg, "peft_type", None) != "LORA":
        raise ConfigError(
            f"reward_adapter={str(adapter_dir)!r} is a {cfg.peft_type} adapter; a LoRA adapter is needed"
        )
    weights = load_file(path)
    head_keys = [k for k in weights if k.endswith("score.weight")]
    if len(head_keys) != 1:
        raise ConfigError(
            f"reward_adapter={str(adapter_dir)!r} holds no trained score head (score.weight); train the reward model "
            "as a SEQ_CLS LoRA with modules_to_save=['score'] (rlhfkit's lora/qlora presets do)"
        )
    head = weights.pop(head_keys[0])
    weights = {k: v for k, v in weights.items() if "score." not in k}
    cfg.task_type = "CAUSAL_LM"
    cfg.modules_to_save = None
    cfg.inference_mode = True
    return cfg, weights, head


def _load_adapter_weights(model, weights: dict[str, torch.Tensor], adapter_name: str, source) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ConfigError(
            f"reward_adapter={str(source)!r} does not fit this base model (unexpected weight {unexpected[0]}); "
            "the reward adapter must have been trained on the same base as the policy"
        )


def load_ppo_models(
    sft_model: str | os.PathLike,
    reward_model: str | os.PathLike,
    *,
    preset="full",
    layout: str | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Load the models of either layout from the SFT folder and the reward stage's output, for :class:`PPOTrainer`.

    ``PPOTrainer(args, train_dataset=prompts, **load_ppo_models(sft, rm, preset="qlora"))``

    Args:
        sft_model: the SFT model folder (or hub id): the policy's start and the reference.
        reward_model: the reward model folder. With the shared layout, the LoRA adapter the reward stage saved
            beside it (``<reward output>/adapter``, or this folder itself if it is an adapter) becomes the reward
            adapter; without one the reward model is loaded separately (4-bit under ``qlora``).
        preset: ``full`` | ``lora`` | ``qlora`` (or a :class:`rlhfkit.presets.MethodPreset`).
        layout: ``separate`` | ``shared``; default: ``separate`` for ``full``, ``shared`` with LoRA.
    Returns:
        keyword arguments for :class:`PPOTrainer`: ``processing_class``, ``model``, ``ref_model``,
        ``reward_model``, ``value_model``, ``reward_processing_class``.
    """
    from peft import get_peft_model

    from rlhfkit.models import load_policy, load_reward_model
    from rlhfkit.presets import MethodPreset, method_preset

    method = preset if isinstance(preset, MethodPreset) else method_preset(preset)
    layout = layout or ("separate" if method.lora is None else "shared")
    if layout not in ("separate", "shared"):
        raise ConfigError(f"layout={layout!r} must be 'separate' or 'shared'")
    if layout == "shared" and method.lora is None:
        raise ConfigError("layout=shared keeps policy and value as LoRA adapters; use preset lora or qlora")
    if layout == "separate" and method.quantization is not None:
        raise ConfigError("layout=separate trains a full value model, which cannot be 4-bit; use layout=shared")
    kw = {"trust_remote_code": trust_remote_code}
    policy, tokenizer = load_policy(sft_model, method, **kw)
    out: dict[str, Any] = {"processing_class": tokenizer, "ref_model": None, "value_model": None}
    if layout == "separate":
        if method.lora is None:
            out["ref_model"] = load_policy(sft_model, "full", **kw)[0].requires_grad_(False)
        else:
            policy = get_peft_model(policy, method.lora)  # reference: the same weights with the adapter off
        rm, rm_tokenizer = load_reward_model(reward_model, "full", **kw)
        out["value_model"] = load_reward_model(reward_model, "full", **kw)[0]  # InstructGPT: V starts as the RM
        out.update(model=policy, reward_model=rm.requires_grad_(False))
    else:
        adapter = next(
            (
                d
                for d in (os.path.join(reward_model, os.pardir, "adapter"), str(reward_model))
                if os.path.isfile(os.path.join(d, "adapter_config.json"))
            ),
            None,
        )
        rm, rm_tokenizer = None, tokenizer
        if adapter is None:
            logger.info("no reward adapter beside %s: loading the reward model separately", reward_model)
            rm_preset = method_preset("qlora") if method.quantization is not None else "full"
            rm, rm_tokenizer = load_reward_model(reward_model, rm_preset, **kw)
            rm.requires_grad_(False)
        out.update(model=build_shared_base(policy, method.lora, reward_adapter=adapter), reward_model=rm)
    same_vocab = rm_tokenizer.get_vocab() == tokenizer.get_vocab()
    out["reward_processing_class"] = None if same_vocab else rm_tokenizer
    return out


# ============================================================================================== trainer
RewardFunction = Callable[..., Sequence[float]]


class PPOTrainer(Trainer):
    """PPO trainer for language models (TRL 1.12's design: a ``transformers.Trainer`` whose ``train`` is PPO).

    Separate layout::

        PPOTrainer(args, tokenizer, model=policy, ref_model=ref, reward_model=rm, train_dataset=prompts,
                   value_model=value)          # value_model defaults to a trainable copy of rm

    Shared-base layout::

        shared = build_shared_base(base, LoraConfig(...), reward_adapter="runs/reward/adapter")
        PPOTrainer(args, tokenizer, model=shared, train_dataset=prompts)      # reward from the adapter

    Args:
        args: a :class:`PPOConfig`.
        processing_class: the policy's tokenizer (pad token distinct from EOS).
        model: the policy: a causal LM (separate layout; a ``PeftModel`` makes its disabled-adapter base the
            reference) or a :class:`SharedBase`.
        ref_model: frozen reference (separate layout, unless ``model`` is a ``PeftModel``); None with SharedBase.
        reward_model: a frozen ``AutoModelForSequenceClassification`` (``num_labels=1``), or a reward function
            called as ``fn(prompts=[str], completions=[str], completion_ids=[[int]])`` returning one float per
            completion (TRL's reward-function convention; accept ``**kwargs``), or None with a SharedBase built
            with a reward adapter.
        train_dataset: prompts: a list of strings or a ``datasets.Dataset`` with a ``prompt`` column (strings or
            chat messages) or an ``input_ids`` column.
        value_model: trainable one-label classifier (separate layout); default: a copy of ``reward_model``.
        reward_processing_class: the reward model's tokenizer when it differs from the policy's.
        metric_funcs: functions logged beside the reward but never optimised, with the reward-function
            signature ``fn(prompts=, completions=, completion_ids=)``; the mean of each is logged every update as
            ``rewards/<fn.__name__>/mean`` (GRPO's key for a reward function), e.g. a gold reward in the lab.
        callbacks, optimizers: as for ``transformers.Trainer``.
    """

    _tag_names = ["trl", "ppo", "rlhfkit"]

    def __init__(
        self,
        args: PPOConfig,
        processing_class,
        model,
        ref_model=None,
        reward_model=None,
        train_dataset=None,
        value_model=None,
        *,
        reward_processing_class=None,
        metric_funcs: Sequence[RewardFunction] | None = None,
        callbacks=None,
        optimizers=(None, None),
    ):
        if not isinstance(args, PPOConfig):
            raise ConfigError(f"args is a {type(args).__name__}; PPOTrainer needs a rlhfkit.ppo.PPOConfig")
        tok = processing_class
        if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
            raise ConfigError(
                f"processing_class.pad_token_id ({tok.pad_token_id}) must differ from eos_token_id "
                f"({tok.eos_token_id}): PPO cannot tell padding from a finished response; fix it with rlhfkit.models."
                "prepare_tokenizer(tokenizer) then rlhfkit.models.sync_model_with_tokenizer(model, tokenizer)"
            )
        if train_dataset is None:
            raise ConfigError("train_dataset is required: a list of prompts or a Dataset with a 'prompt' column")
        self.reward_fn = None if reward_model is None or isinstance(reward_model, nn.Module) else reward_model
        self.reward_model = reward_model if isinstance(reward_model, nn.Module) else None
        self.reward_processing_class = reward_processing_class
        self.metric_funcs = list(metric_funcs or [])
        self.shared = model if isinstance(model, SharedBase) else None
        if self.shared is not None:
            if ref_model is not None or value_model is not None:
                raise ConfigError(
                    "ref_model and value_model must be None with a SharedBase: the reference is the base with "
                    "adapters disabled and the value model is its value adapter"
                )
            if reward_model is None and self.shared.reward_adapter is None:
                raise ConfigError(
                    "reward_model is None and the SharedBase has no reward adapter; pass reward_model (a model or a "
                    "function) or build_shared_base(..., reward_adapter=DIR)"
                )
            wrapper, self.ref_model, self.policy = model, None, model.model
            self._check_shared_frozen()
        else:
            is_peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
            if ref_model is None and not is_peft:
                raise ConfigError(
                    "ref_model is required for a full policy: pass a frozen copy of the SFT model "
                    "(AutoModelForCausalLM.from_pretrained(sft_path).requires_grad_(False)), or use a LoRA policy"
                )
            if ref_model is model:
                raise ConfigError(
                    "ref_model is the policy object itself; pass a separate frozen copy of the SFT model"
                )
            if reward_model is None:
                raise ConfigError("reward_model is required: a reward model or a reward function")
            if value_model is None:
                if self.reward_model is None:
                    raise ConfigError(
                        "value_model is required with a reward function: pass "
                        "AutoModelForSequenceClassification.from_pretrained(sft_path, num_labels=1)"
                    )
                value_model = copy.deepcopy(self.reward_model).requires_grad_(True)  # InstructGPT: V init from RM
            self.ref_model, self.policy = ref_model, model
            wrapper = PolicyAndValue(model, value_model)
            if ref_model is not None:
                _require_frozen(ref_model, "ref_model")
        for what, scorer in (("value_model", value_model), ("reward_model", self.reward_model)):
            labels = getattr(getattr(scorer, "config", None), "num_labels", 1)
            if labels != 1:
                raise ConfigError(
                    f"{what} has num_labels={labels}; PPO needs one scalar per token: load it with "
                    "AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)"
                )
        if self.reward_model is not None:
            _require_frozen(self.reward_model, "reward_model")
        for module in (wrapper, self.ref_model, self.reward_model):
            if module is not None:
                _disable_dropout(module)

        self.stop_token_id = tok.eos_token_id if args.stop_token == "eos" else args.stop_token_id
        self.prompt_ids, self.prompt_texts = _tokenize_prompts(train_dataset, tok)
        # Chat prompts: RewardTrainer trained the reward model on the chat template's rendering, which may continue
        # after the EOS that ends the answer (Qwen: "<|im_end|>\n"); its score sits at that last token, so the
        # rollout scores finished answers with the same tokens appended.
        chat = _is_chat(train_dataset)
        self.score_suffix = _chat_suffix_ids(tok) if chat and self.stop_token_id == tok.eos_token_id else []

        super().__init__(model=wrapper, args=args, processing_class=tok, callbacks=callbacks, optimizers=optimizers)
        self.train_dataset = train_dataset
        self._check_no_parameter_sharding()

        # ---- batch sizes (TRL 1.12's names)
        world = self.accelerator.num_processes
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if world != launched:
            raise ConfigError(
                f"{launched} processes were launched (WORLD_SIZE) but the accelerator trains with {world}: each "
                "process would train its own copy and overwrite the others' files. On a machine without a GPU set "
                "use_cpu=True (PPOConfig's default None does) so torchrun starts gloo DDP"
            )
        self.local_batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self.batch_size = self.local_batch_size * world
        self.local_mini_batch_size = self.local_batch_size // args.num_mini_batches
        if len(self.prompt_ids) < self.batch_size:
            raise ConfigError(
                f"train_dataset has {len(self.prompt_ids)} prompts, fewer than one batch ({self.batch_size} = "
                "per_device_train_batch_size * gradient_accumulation_steps * processes); add prompts or lower them"
            )
        total_episodes = args.total_episodes or int(args.num_train_epochs * len(self.prompt_ids))
        self.num_total_batches = math.ceil(total_episodes / self.batch_size)
        self.sample_every = (
            max(1, self.num_total_batches // args.num_sample_generations) if args.num_sample_generations else 0
        )

        # ---- optimiser, scheduler, devices
        if args.activation_checkpointing:  # transformers 5's name; `gradient_checkpointing` is its alias
            for m in _pretrained_models(wrapper):
                m.activation_checkpointing_enable(activation_checkpointing_kwargs=_checkpointing_kwargs(args))
        self.create_optimizer_and_scheduler(num_training_steps=self.num_total_batches)
        self.callback_handler.optimizer, self.callback_handler.lr_scheduler = self.optimizer, self.lr_scheduler
        self.model_wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        for frozen in (self.ref_model, self.reward_model):
            if frozen is not None and not getattr(frozen, "is_quantized", False):
                frozen.to(self.accelerator.device)
        self.kl_ctl = (
            core.AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon)
            if args.target_kl is not None
            else core.FixedKLController(args.kl_coef)
        )
        self.generation_config = GenerationConfig(
            max_new_tokens=args.response_length,
            do_sample=True,
            temperature=args.temperature + 1e-7,
            # Set every knob that reshapes the sampling distribution: unset ones are filled from the model's own
            # generation_config (e.g. Qwen's top_k=20, repetition_penalty=1.05) and log-probs would then be wrong.
            top_k=0,
            top_p=1.0,
            min_p=0.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            eos_token_id=self.stop_token_id if self.stop_token_id is not None else [],  # []: never stop early
            pad_token_id=tok.pad_token_id,
        )

    # ------------------------------------------------------------------------------------------ checks
    def _check_no_parameter_sharding(self) -> None:
        ds = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        refuse_parameter_sharding(self.is_fsdp_enabled, getattr(ds, "zero_stage", None))

    def _check_shared_frozen(self) -> None:
        shared = self.shared
        allowed = {
            id(p)
            for name in (shared.policy_adapter, shared.value_adapter)
            for _, p in _adapter_parameters(shared.model, name)
        }
        for name, p in shared.model.named_parameters():
            if p.requires_grad and id(p) not in allowed:
                raise ConfigError(
                    f"shared base weight {name!r} is trainable, but the reference (base) and reward adapter must stay "
                    "frozen; build the layout with rlhfkit.ppo.build_shared_base"
                )
        if shared.reward_head is not None:
            _require_frozen(shared.reward_head, "SharedBase.reward_head")

    # ------------------------------------------------------------------------------------------ rollout
    def _batch_prompts(self, update: int) -> list[int]:
        """Indices of this process's prompts for 0-based ``update``: a fresh seeded permutation per epoch."""
        per_epoch = len(self.prompt_ids) // self.batch_size
        epoch, pos = divmod(update, per_epoch)
        perm = torch.randperm(len(self.prompt_ids), generator=torch.Generator().manual_seed(self.args.seed + epoch))
        start = pos * self.batch_size + self.accelerator.process_index * self.local_batch_size
        return perm[start : start + self.local_batch_size].tolist()

    def _forward_inputs(self, queries, query_mask, responses, response_mask):
        input_ids = torch.cat([queries, responses], 1)
        attention_mask = torch.cat([query_mask, response_mask], 1).long()
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}

    def _policy_logprobs(self, model, inputs, responses) -> torch.Tensor:
        R = responses.shape[1]
        logits = model(**inputs, logits_to_keep=R + 1, use_cache=False).logits[:, :-1]
        return core.logprobs_from_logits(logits / (self.args.temperature + 1e-7), responses)

    @torch.no_grad()
    def _rollout(self, indices: list[int]) -> dict[str, Any]:
        args, tok, device = self.args, self.processing_class, self.accelerator.device
        queries, query_mask = _left_pad([self.prompt_ids[i] for i in indices], tok.pad_token_id, device)
        P, chunk = queries.shape[1], args.local_rollout_forward_batch_size
        generated = []
        # Stay in train mode (dropout is off anyway): bitsandbytes repacks CPU 4-bit weights for inference in
        # eval mode, and backprop through repacked weights is wrong. Gradient checkpointing is paused instead, so
        # that generate can use its KV cache.
        with self.accelerator.autocast(), _no_gradient_checkpointing(self.model, _checkpointing_kwargs(args)):
            for s in range(0, len(indices), chunk):
                with self._as_policy():
                    out = self.policy.generate(
                        input_ids=queries[s : s + chunk],
                        attention_mask=query_mask[s : s + chunk],
                        generation_config=self.generation_config,
                    )
                generated.append(out[:, P:])
        R = max(g.shape[1] for g in generated)
        responses = torch.cat([nn.functional.pad(g, (0, R - g.shape[1]), value=tok.pad_token_id) for g in generated])
        responses, mask = core.truncate_at_stop_token(responses, self.stop_token_id, tok.pad_token_id)

        logprobs, ref_logprobs, values, model_scores = [], [], [], []
        with self.accelerator.autocast():
            for s in range(0, len(indices), chunk):
                sl = slice(s, s + chunk)
                inputs = self._forward_inputs(queries[sl], query_mask[sl], responses[sl], mask[sl])
                with self._as_policy():
                    logprobs.append(self._policy_logprobs(self.policy, inputs, responses[sl]))
                with self._as_reference() as ref:
                    ref_logprobs.append(self._policy_logprobs(ref, inputs, responses[sl]))
                values.append(self.model.values(**inputs)[:, P - 1 : -1])
                if self.reward_fn is None and self.reward_processing_class is None:
                    score_inputs, score_mask = inputs, mask[sl]
                    if self.score_suffix:
                        ext, score_mask = _append_after_stop(
                            responses[sl], mask[sl], self.stop_token_id, self.score_suffix, tok.pad_token_id
                        )
                        score_inputs = self._forward_inputs(queries[sl], query_mask[sl], ext, score_mask)
                    last = P + score_mask.sum(1) - 1
                    per_token = self._reward_per_token(score_inputs)
                    model_scores.append(per_token[torch.arange(len(last), device=device), last])

        completions = tok.batch_decode(responses.masked_fill(~mask, tok.pad_token_id), skip_special_tokens=True)
        prompts = [self.prompt_texts[i] for i in indices]
        if model_scores:
            scores = torch.cat(model_scores)
        else:
            scores = self._external_scores(prompts, completions, responses, mask).to(device)
        return {
            "queries": queries,
            "query_mask": query_mask,
            "responses": responses,
            "mask": mask,
            "logprobs": torch.cat(logprobs),
            "ref_logprobs": torch.cat(ref_logprobs),
            "values": torch.cat(values).float(),
            "raw_scores": scores.float(),
            "prompts": prompts,
            "completions": completions,
        }

    def _as_policy(self):
        if self.shared is not None:
            return use_adapter(self.shared.model, self.shared.policy_adapter)
        return contextlib.nullcontext()

    def _as_value(self):
        if self.shared is not None:
            return use_adapter(self.shared.model, self.shared.value_adapter)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _as_reference(self):
        if self.ref_model is not None:
            yield self.ref_model
        else:
            with use_adapter(self.policy, None) as base:
                yield base

    def _reward_per_token(self, inputs) -> torch.Tensor:
        if self.reward_model is not None:
            return per_token_scores(*_backbone_and_head(self.reward_model), **inputs)
        return self.shared.rewards(**inputs)

    def _external_scores(self, prompts, completions, responses, mask) -> torch.Tensor:
        """Scores from the reward function, or from the reward model through its own tokenizer."""
        ids = [r[m].tolist() for r, m in zip(responses.cpu(), mask.cpu())]
        if self.reward_fn is not None:
            scores = self.reward_fn(prompts=prompts, completions=completions, completion_ids=ids)
            return torch.as_tensor([float(s) for s in scores], dtype=torch.float32)
        rtok = self.reward_processing_class
        ended = [bool(i) and i[-1] == self.stop_token_id for i in ids]
        texts = [
            p + c + (rtok.eos_token if e and rtok.eos_token else "") for p, c, e in zip(prompts, completions, ended)
        ]
        enc = rtok(texts, add_special_tokens=True)["input_ids"]
        x, m = _right_pad(enc, rtok.pad_token_id, self.accelerator.device)
        inputs = {"input_ids": x, "attention_mask": m.long(), "position_ids": (m.long().cumsum(1) - 1).clamp(min=0)}
        with torch.no_grad(), self.accelerator.autocast():
            per_token = self._reward_per_token(inputs)
        return per_token[torch.arange(len(enc)), m.sum(1) - 1].cpu()

    # ------------------------------------------------------------------------------------------ advantages
    def _advantages(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        args, mask = self.args, batch["mask"]
        scores = batch["raw_scores"]
        if args.reward_mean is not None:
            scores = (scores - args.reward_mean) / args.reward_std
        scores = core.apply_missing_eos_penalty(
            scores, batch["responses"], mask, self.processing_class.eos_token_id, args.missing_eos_penalty
        )
        kl = core.per_token_kl(batch["logprobs"], batch["ref_logprobs"], mask, args.kl_estimator)
        rewards, non_score = core.shape_rewards(scores, kl, mask, self.kl_ctl.value)
        if args.whiten_rewards:
            rewards = core.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = core.compute_gae(rewards, batch["values"], mask, args.gamma, args.lam)
        advantages = core.masked_whiten(advantages, mask)
        return {"scores": scores, "kl": kl, "non_score": non_score, "advantages": advantages, "returns": returns}

    # ------------------------------------------------------------------------------------------ optimisation
    def _ppo_epochs(self, batch: dict[str, Any], adv: dict[str, torch.Tensor]) -> dict[str, list[float]]:
        args = self.args
        P, R = batch["queries"].shape[1], batch["responses"].shape[1]
        micro, mini = args.per_device_train_batch_size, self.local_mini_batch_size
        n_micro = mini // micro
        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("approxkl", "clipfrac", "pg", "vf", "vclip", "ent", "ratio")
        }
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(self.local_batch_size)
            for m0 in range(0, self.local_batch_size, mini):
                for j, u0 in enumerate(range(m0, m0 + mini, micro)):
                    idx = order[u0 : u0 + micro].to(self.accelerator.device)
                    mask, responses = batch["mask"][idx], batch["responses"][idx]
                    inputs = self._forward_inputs(batch["queries"][idx], batch["query_mask"][idx], responses, mask)
                    # Policy and value: separate forward + backward, each with its adapter active (shared base).
                    # Gradients are synchronised across processes once, at the last backward of the mini-batch.
                    with self._as_policy(), self.accelerator.no_sync(self.model_wrapped):
                        logits = self.model_wrapped(**inputs, logits_to_keep=R + 1, part="policy")[:, :-1]
                        logits = logits / (args.temperature + 1e-7)
                        new_logprobs = core.logprobs_from_logits(logits, responses)
                        pg_loss, clipfrac, approxkl = core.clipped_policy_loss(
                            new_logprobs, batch["logprobs"][idx], adv["advantages"][idx], mask, args.cliprange
                        )
                        self.accelerator.backward(pg_loss / n_micro)
                    sync = (
                        contextlib.nullcontext() if j == n_micro - 1 else self.accelerator.no_sync(self.model_wrapped)
                    )
                    with self._as_value(), sync:
                        vpred = self.model_wrapped(**inputs, part="value")[:, P - 1 : -1]
                        vf_loss, vclip = core.clipped_value_loss(
                            vpred, batch["values"][idx], adv["returns"][idx], mask, args.cliprange_value
                        )
                        self.accelerator.backward(args.vf_coef * vf_loss / n_micro)
                    with torch.no_grad():
                        ratio = core.masked_mean(torch.exp(new_logprobs - batch["logprobs"][idx]), mask)
                        entropy = core.masked_mean(core.entropy_from_logits(logits), mask)
                    for k, v in zip(stats, (approxkl, clipfrac, pg_loss, vf_loss, vclip, entropy, ratio)):
                        stats[k].append(v.detach().float())
                if args.max_grad_norm and args.max_grad_norm > 0:
                    self.accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
        return {k: torch.stack(v) for k, v in stats.items()}

    # ------------------------------------------------------------------------------------------ train
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """Run ``ceil(total_episodes / batch_size)`` PPO updates; resume from a checkpoint folder or True (last)."""
        from transformers.trainer_utils import TrainOutput, get_last_checkpoint

        args = self.args
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(args.output_dir)
            if resume_from_checkpoint is None:
                raise ConfigError(f"resume_from_checkpoint=True but {args.output_dir!r} has no checkpoint-N folder")
        if resume_from_checkpoint:
            self._load_ppo_checkpoint(str(resume_from_checkpoint))
        else:
            self.state.global_step = 0
        self.state.max_steps = self.num_total_batches
        self.state.num_train_epochs = self.num_total_batches * self.batch_size / len(self.prompt_ids)
        self.state.train_batch_size = self.batch_size
        for name in ("logging_steps", "save_steps", "eval_steps"):
            value = getattr(args, name) or 1
            setattr(self.state, name, math.ceil(self.num_total_batches * value) if value < 1 else int(value))
        self.control = self.callback_handler.on_train_begin(args, self.state, self.control)
        if resume_from_checkpoint:
            self._load_rng_state(str(resume_from_checkpoint))  # last: nothing may draw random numbers after it

        start_time, start_step, losses = time.time(), self.state.global_step, []
        self.model.train()
        for update in range(self.state.global_step, self.num_total_batches):
            self.control = self.callback_handler.on_step_begin(args, self.state, self.control)
            batch = self._rollout(self._batch_prompts(update))
            adv = self._advantages(batch)
            stats = self._ppo_epochs(batch, adv)
            metrics = self._metrics(batch, adv, stats, start_time, start_step)
            losses.append(metrics["loss/policy_avg"] + args.vf_coef * metrics["loss/value_avg"])
            self.lr_scheduler.step()
            self.kl_ctl.update(metrics["objective/kl"], self.batch_size)
            self.state.global_step += 1
            self.state.epoch = self.state.global_step * self.batch_size / len(self.prompt_ids)
            if self.sample_every and (update % self.sample_every == 0):
                self._log_samples(batch, adv["scores"])

            self.control = self.callback_handler.on_step_end(args, self.state, self.control)
            if self.control.should_log:
                self.log(metrics)
            if self.control.should_save:
                self._save_checkpoint(self.model, trial=None)
                self.control = self.callback_handler.on_save(args, self.state, self.control)
            if self.control.should_training_stop:
                break

        self.control = self.callback_handler.on_train_end(args, self.state, self.control)
        runtime = time.time() - start_time
        return TrainOutput(
            self.state.global_step,
            sum(losses) / max(len(losses), 1),
            {"train_runtime": runtime, "train_steps_per_second": len(losses) / max(runtime, 1e-9)},
        )

    def _metrics(self, batch, adv, stats, start_time, start_step) -> dict[str, float]:
        mask, kl, non_score, scores = batch["mask"], adv["kl"], adv["non_score"], adv["scores"]
        mean_kl = kl.sum(1).mean()
        mean_non_score = non_score.sum(1).mean()
        eos = self.processing_class.eos_token_id
        local = {
            "objective/kl": mean_kl,
            "objective/entropy": (-batch["logprobs"] * mask).sum(1).mean(),
            "objective/non_score_reward": mean_non_score,
            "objective/rlhf_reward": mean_non_score + scores.mean(),
            "objective/scores": scores.mean(),
            "policy/approxkl_avg": stats["approxkl"].mean(),
            "policy/clipfrac_avg": stats["clipfrac"].mean(),
            "loss/policy_avg": stats["pg"].mean(),
            "loss/value_avg": stats["vf"].mean(),
            "val/clipfrac_avg": stats["vclip"].mean(),
            "policy/entropy_avg": stats["ent"].mean(),
            "val/ratio": stats["ratio"].mean(),
            "val/ratio_var": stats["ratio"].var() if len(stats["ratio"]) > 1 else torch.zeros(()),
            "val/num_eos_tokens": ((batch["responses"] == eos) & mask).sum().float(),
            "completions/mean_length": mask.sum(1).float().mean(),
        }
        if self.metric_funcs:
            ids = [r[m].tolist() for r, m in zip(batch["responses"].cpu(), mask.cpu())]
            for fn in self.metric_funcs:
                values = fn(prompts=batch["prompts"], completions=batch["completions"], completion_ids=ids)
                local[f"rewards/{fn.__name__}/mean"] = torch.as_tensor([float(v) for v in values]).mean()
        values = torch.stack([v.detach().float().to(self.accelerator.device) for v in local.values()])
        gathered = self.accelerator.gather_for_metrics(values[None]).reshape(-1, len(local)).mean(0).tolist()
        metrics = dict(zip(local, gathered))
        episode = (self.state.global_step + 1) * self.batch_size
        metrics["val/num_eos_tokens"] *= self.accelerator.num_processes  # TRL: a total, not a mean
        metrics.update(
            {
                "objective/kl_coef": self.kl_ctl.value,
                "lr": self.lr_scheduler.get_last_lr()[0],
                "episode": episode,
                "eps": (episode - start_step * self.batch_size) / max(time.time() - start_time, 1e-9),
            }
        )
        return metrics

    def _log_samples(self, batch, scores, n: int = 3) -> None:
        if not self.accelerator.is_main_process:
            return
        for p, c, s in list(zip(batch["prompts"], batch["completions"], scores.tolist()))[:n]:
            logger.info("step %d sample | score %.3f | %r -> %r", self.state.global_step, s, p, c)

    # ------------------------------------------------------------------------------------------ save / resume
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Checkpoints (internal calls): every trainable tensor, for exact resume. Otherwise: the final policy
        (the full model, or the policy LoRA adapter for peft policies) + tokenizer, as safetensors."""
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        if _internal_call:
            from safetensors.torch import save_file

            state = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            save_file(state, os.path.join(output_dir, TRAINABLE_WEIGHTS_NAME), metadata={"format": "pt"})
            return
        policy = self.accelerator.unwrap_model(self.model).policy if self.shared is None else self.shared.model
        if self.shared is not None:
            policy.save_pretrained(output_dir, selected_adapters=[self.shared.policy_adapter])
        else:
            policy.save_pretrained(output_dir)
        self.processing_class.save_pretrained(output_dir)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            with open(os.path.join(folder, PPO_STATE_NAME), "w") as f:
                json.dump({"kl_ctl": self.kl_ctl.state_dict()}, f)

    def _load_ppo_checkpoint(self, checkpoint: str) -> None:
        from safetensors.torch import load_file
        from transformers import TrainerState

        path = os.path.join(checkpoint, TRAINABLE_WEIGHTS_NAME)
        if not os.path.isfile(path):
            raise ConfigError(
                f"resume_from_checkpoint={checkpoint!r} has no {TRAINABLE_WEIGHTS_NAME}; give a PPO checkpoint-N"
            )
        weights = load_file(path, device=str(self.accelerator.device))
        result = self.model.load_state_dict(weights, strict=False)
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if result.unexpected_keys or trainable - set(weights):
            raise ConfigError(
                f"checkpoint {checkpoint!r} does not match this model layout (unexpected "
                f"{result.unexpected_keys[:2]}, missing {sorted(trainable - set(weights))[:2]}); "
                "resume with the same models and layout"
            )
        self._load_optimizer_and_scheduler(checkpoint)
        self.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
        with open(os.path.join(checkpoint, PPO_STATE_NAME)) as f:
            self.kl_ctl.load_state_dict(json.load(f)["kl_ctl"])
        self._load_callback_state()


# ============================================================================================== helpers
def refuse_parameter_sharding(fsdp: bool, zero_stage: int | None) -> None:
    """Refuse FSDP and DeepSpeed ZeRO-3: every rollout generates with the whole policy, which would have to be
    gathered from its shards each time (not implemented); DDP and ZeRO-1/2 keep full parameters on each GPU."""
    if fsdp or zero_stage == 3:
        raise ConfigError(
            f"PPOTrainer does not support {'FSDP' if fsdp else 'DeepSpeed ZeRO-3'}: rollouts generate with the whole "
            "policy on each GPU; launch with configs/accelerate/multi_gpu.yaml or zero2.yaml, and fit large models "
            "with preset qlora (shared-base layout) instead of sharding"
        )


def _require_frozen(module: nn.Module, what: str) -> None:
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise ConfigError(
            f"{what} has {len(trainable)} trainable tensors (e.g. {trainable[0]!r}) but must stay frozen; "
            f"call {what}.requires_grad_(False) before building PPOTrainer"
        )


def _disable_dropout(module: nn.Module) -> None:
    """Dropout off everywhere (TRL 1.12): rollout log-probs must equal the first PPO epoch's log-probs."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if isinstance(getattr(m, "attention_dropout", None), float):  # functional attention dropout (Llama, Qwen)
            m.attention_dropout = 0.0


def _pretrained_models(wrapper: nn.Module) -> list[nn.Module]:
    if isinstance(wrapper, SharedBase):
        return [wrapper.model.get_base_model()]
    return [m.get_base_model() if hasattr(m, "get_base_model") else m for m in (wrapper.policy, wrapper.value_model)]


@contextlib.contextmanager
def _no_gradient_checkpointing(wrapper: nn.Module, checkpointing_kwargs: dict[str, Any]) -> Iterator[None]:
    paused = [m for m in _pretrained_models(wrapper) if m.is_activation_checkpointing]
    for m in paused:
        m.activation_checkpointing_disable()
    try:
        yield
    finally:
        for m in paused:
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing_kwargs)


def _checkpointing_kwargs(args) -> dict[str, Any]:
    # Non-reentrant checkpointing: works with frozen inputs (LoRA on a frozen base) without enable_input_require_grads.
    return {"use_reentrant": False, **(args.activation_checkpointing_kwargs or {})}


def _tokenize_prompts(dataset, tokenizer) -> tuple[list[list[int]], list[str]]:
    """Prompts -> (token ids, texts). Accepts a list of strings or a Dataset with ``prompt`` or ``input_ids``."""
    if isinstance(dataset, (list, tuple)):
        rows: Sequence = [{"prompt": p} for p in dataset]
        columns = {"prompt"}
    else:
        rows, columns = dataset, set(dataset.column_names)
    if "input_ids" in columns:
        ids = [list(r["input_ids"]) for r in rows]
        return ids, tokenizer.batch_decode(ids, skip_special_tokens=True)
    if "prompt" not in columns:
        raise ConfigError(f"train_dataset has columns {sorted(columns)}; it needs a 'prompt' or 'input_ids' column")
    ids, texts = [], []
    for r in rows:
        prompt = r["prompt"]
        if isinstance(prompt, str):
            texts.append(prompt)
            ids.append(tokenizer(prompt)["input_ids"])
        else:  # chat messages
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            texts.append(text)
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    if any(len(i) == 0 for i in ids):
        raise ConfigError("train_dataset has an empty prompt; remove it (PPO needs at least one prompt token)")
    return ids, texts


def _is_chat(dataset) -> bool:
    """Whether the prompts are chat messages (lists of role/content dicts) rather than text or token ids."""
    if isinstance(dataset, (list, tuple)):
        first = dataset[0] if dataset else ""
    else:
        first = dataset[0]["prompt"] if "prompt" in dataset.column_names and len(dataset) else ""
    return not isinstance(first, str)


def _chat_suffix_ids(tokenizer) -> list[int]:
    """Token ids the chat template puts after the EOS that ends an assistant turn (Qwen: "\n"; Llama 3: none)."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    end = rendered.rfind(tokenizer.eos_token) if tokenizer.eos_token else -1
    suffix = rendered[end + len(tokenizer.eos_token) :] if end >= 0 else ""
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"]) if suffix else []


def _append_after_stop(responses, mask, stop_token_id, suffix: list[int], pad: int):
    """Right-padded ``responses`` with ``suffix`` appended to the rows that end with the stop token; new mask."""
    lengths = mask.sum(1)
    ended = (lengths > 0) & (responses.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0] == stop_token_id)
    ext = nn.functional.pad(responses.masked_fill(~mask, pad), (0, len(suffix)), value=pad)
    positions = lengths[:, None] + torch.arange(len(suffix), device=responses.device)[None]
    rows = ended.nonzero()[:, 0]
    ext[rows[:, None], positions[rows]] = torch.tensor(suffix, device=responses.device)
    new_lengths = lengths + ended.long() * len(suffix)
    new_mask = torch.arange(ext.shape[1], device=responses.device)[None] < new_lengths[:, None]
    return ext, new_mask


def _left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, L - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, L - len(s) :] = True
    return ids.to(device), mask.to(device)


def _right_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids.to(device), mask.to(device)
