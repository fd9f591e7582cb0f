"""PPO's model layouts: separate models (:class:`PolicyAndValue`) or one shared base (:class:`SharedBase`).

* **separate**: policy, frozen reference, frozen reward model, value model initialised from the reward model.
* **shared**: one (optionally 4-bit) base holding the policy LoRA, a value LoRA + head and the reward model as a
  LoRA + head; the reference is the base with adapters disabled (:func:`use_adapter`).

:func:`load_ppo_models` loads either layout from the SFT and reward stages' output folders; the checks and switches
that :class:`~rlhfkit.rl.ppo.trainer.PPOTrainer` applies to a layout (frozen parts, dropout, activation checkpointing)
live here too.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.presets import MethodPreset, method_preset
from rlhfkit.models.loading import load_policy, load_reward_model
from rlhfkit.models.scoring import aggregate_rewards, check_aggregation, load_reward_function
from rlhfkit.reward.ensemble import read_ensemble

logger = logging.getLogger(__name__)


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
    reward model -- or the K members of a reward ensemble -- plus the value and reward heads. The reference model
    is the base with adapters disabled.

    Build it with :func:`build_shared_base`. Attributes: ``model`` (the ``PeftModel``), ``value_head``,
    ``reward_heads`` (one per reward adapter), ``policy_adapter`` / ``value_adapter`` / ``reward_adapters`` (names);
    ``reward_adapter`` / ``reward_head`` are the first (None without a reward adapter). With K > 1 reward adapters,
    :meth:`rewards` standardises each member with ``reward_stats`` (``(mean, std)`` per member) and combines them
    with :func:`rlhfkit.models.scoring.aggregate_rewards` (``aggregation``, ``coef``).
    """

    def __init__(
        self,
        model,
        value_head: nn.Module,
        reward_heads: nn.Module | list[nn.Module] | None = None,
        *,
        policy_adapter: str = "default",
        value_adapter: str = "value",
        reward_adapters: str | list[str] | None = None,
        reward_stats: list[tuple[float, float]] | None = None,
        aggregation: str = "mean",
        coef: float = 1.0,
    ):
        super().__init__()
        heads = [reward_heads] if isinstance(reward_heads, nn.Module) else list(reward_heads or [])
        adapters = [reward_adapters] if isinstance(reward_adapters, str) else list(reward_adapters or [])
        missing = [n for n in [policy_adapter, value_adapter, *adapters] if n not in model.peft_config]
        if missing:
            raise ConfigError(f"SharedBase: adapter(s) {missing} not in the peft model {sorted(model.peft_config)}")
        if len(adapters) != len(heads):
            raise ConfigError(f"SharedBase: {len(adapters)} reward adapter(s) but {len(heads)} reward head(s)")
        if len(adapters) > 1 and (reward_stats is None or len(reward_stats) != len(adapters)):
            raise ConfigError("SharedBase: a reward ensemble needs reward_stats, one (mean, std) per member")
        check_aggregation(aggregation, coef)
        self.model = model
        self.value_head = value_head
        self.reward_heads = nn.ModuleList(heads)
        self.policy_adapter, self.value_adapter, self.reward_adapters = policy_adapter, value_adapter, adapters
        self.reward_stats, self.aggregation, self.coef = reward_stats, aggregation, coef
        self.last_member_scores: torch.Tensor | None = None  # (K, B, L) standardised, from the last rewards() call

    @property
    def reward_adapter(self) -> str | None:
        return self.reward_adapters[0] if self.reward_adapters else None

    @property
    def reward_head(self) -> nn.Module | None:
        return self.reward_heads[0] if len(self.reward_heads) else None

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
        """The reward head at every position, ``(B, L)`` float32: the reward adapter's, or the ensemble's aggregate
        of its members' standardised scores (kept in :attr:`last_member_scores`, ``(K, B, L)``)."""
        scores = []
        for name, head in zip(self.reward_adapters, self.reward_heads):
            with use_adapter(self.model, name):
                scores.append(per_token_scores(self.backbone, head, input_ids, attention_mask, position_ids))
        if len(scores) == 1:
            return scores[0]
        members = torch.stack([(s - mean) / std for s, (mean, std) in zip(scores, self.reward_stats)])
        self.last_member_scores = members
        return aggregate_rewards(members.flatten(1), self.aggregation, self.coef).view_as(scores[0])


def _adapter_parameters(peft_model, adapter_name: str) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in peft_model.named_parameters() if "lora_" in n and f".{adapter_name}." in n]


def build_shared_base(
    base_model,
    lora_config=None,
    *,
    reward_adapter: str | os.PathLike | list[str | os.PathLike] | None = None,
    reward_stats: list[tuple[float, float]] | None = None,
    aggregation: str = "mean",
    coef: float = 1.0,
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
            It is loaded frozen as adapter ``"reward"`` with a frozen head. A list: the members of a reward
            ensemble (``member-k/adapter``), loaded as ``"reward_0"``, ``"reward_1"``, ...; K members cost K
            adapters and heads on the one base. None: rewards come from elsewhere (a separate reward model or a
            reward function passed to :class:`PPOTrainer`).
        reward_stats, aggregation, coef: an ensemble's members' ``(mean, std)`` and how their standardised scores
            make one reward (see :class:`SharedBase`).
        value_from_reward: initialise the value adapter and head from the (first) reward adapter (InstructGPT
            initialises the value function from the reward model); otherwise a fresh adapter and a zero head.
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

    paths = [reward_adapter] if isinstance(reward_adapter, str | os.PathLike) else list(reward_adapter or [])
    names = ["reward"] if len(paths) == 1 else [f"reward_{k}" for k in range(len(paths))]
    heads, first = [], None
    for name, path in zip(names, paths):
        reward_cfg, reward_weights, head_weight = _read_reward_adapter(path)
        model.add_adapter(name, reward_cfg)
        _load_adapter_weights(model, reward_weights, name, path)
        head = nn.Linear(config.hidden_size, 1, bias=False, device=device)
        with torch.no_grad():
            head.weight.copy_(head_weight.reshape(1, -1))
        heads.append(head.requires_grad_(False))
        first = first or (reward_cfg, reward_weights, path)
    value_head = nn.Linear(config.hidden_size, 1, bias=False, device=device)
    if first is not None and value_from_reward:
        value_cfg = copy.deepcopy(first[0])
        value_cfg.inference_mode = False
        model.add_adapter(value_adapter, value_cfg)
        _load_adapter_weights(model, first[1], value_adapter, first[2])
        with torch.no_grad():
            value_head.weight.copy_(heads[0].weight)
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
    return SharedBase(
        model,
        value_head,
        heads,
        policy_adapter=policy_adapter,
        value_adapter=value_adapter,
        reward_adapters=names,
        reward_stats=reward_stats,
        aggregation=aggregation,
        coef=coef,
    )


# ============================================================================================== checks, switches
def require_frozen(module: nn.Module, what: str) -> None:
    """Refuse ``module`` (named ``what`` in the error) if any of its parameters requires grad."""
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    if trainable:
        raise ConfigError(
            f"{what} has {len(trainable)} trainable tensors (e.g. {trainable[0]!r}) but must stay frozen; "
            f"call {what}.requires_grad_(False) before building PPOTrainer"
        )


def check_shared_frozen(shared: SharedBase) -> None:
    """Refuse a shared base that trains anything but the policy and value adapters (and heads outside the model)."""
    allowed = {
        id(p)
        for name in (shared.policy_adapter, shared.value_adapter)
        for _, p in _adapter_parameters(shared.model, name)
    }
    for name, p in shared.model.named_parameters():
        if p.requires_grad and id(p) not in allowed:
            raise ConfigError(
                f"shared base weight {name!r} is trainable, but the reference (base) and reward adapter must stay "
                "frozen; build the layout with rlhfkit.rl.ppo.layouts.build_shared_base"
            )
    for k, head in enumerate(shared.reward_heads):
        require_frozen(head, f"SharedBase.reward_heads[{k}]")


def disable_dropout(module: nn.Module) -> None:
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


def _checkpointing_kwargs(user_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    # Non-reentrant checkpointing: works with frozen inputs (LoRA on a frozen base) without enable_input_require_grads.
    return {"use_reentrant": False, **(user_kwargs or {})}


def enable_activation_checkpointing(wrapper: nn.Module, user_kwargs: dict[str, Any] | None) -> None:
    """Activation checkpointing on every pretrained model of a :class:`PolicyAndValue` or :class:`SharedBase`
    (non-reentrant unless ``user_kwargs``, the config's ``activation_checkpointing_kwargs``, say otherwise)."""
    for m in _pretrained_models(wrapper):
        m.activation_checkpointing_enable(activation_checkpointing_kwargs=_checkpointing_kwargs(user_kwargs))


@contextlib.contextmanager
def activation_checkpointing_paused(wrapper: nn.Module, user_kwargs: dict[str, Any] | None) -> Iterator[None]:
    """Activation checkpointing off inside (``generate`` needs its KV cache), back on with ``user_kwargs`` after."""
    paused = [m for m in _pretrained_models(wrapper) if m.is_activation_checkpointing]
    for m in paused:
        m.activation_checkpointing_disable()
    try:
        yield
    finally:
        for m in paused:
            m.activation_checkpointing_enable(activation_checkpointing_kwargs=_checkpointing_kwargs(user_kwargs))


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
    reward_aggregation: str = "mean",
    reward_ensemble_coef: float = 1.0,
    reference_model: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Load the models of either layout from the SFT folder and the reward stage's output, for :class:`PPOTrainer`.

    ``PPOTrainer(args, train_dataset=prompts, **load_ppo_models(sft, rm, preset="qlora"))``

    Args:
        sft_model: the SFT model folder (or hub id): the policy's start and the reference.
        reward_model: the reward model folder. With the shared layout, the LoRA adapter the reward stage saved
            beside it (``<reward output>/adapter``, or this folder itself if it is an adapter) becomes the reward
            adapter; without one the reward model is loaded separately (4-bit under ``qlora``). A reward ensemble
            (``ensemble.json``, :mod:`rlhfkit.reward.config`): with the shared layout its members' adapters become K
            reward adapters on the base; otherwise (or without adapters) it scores through PPO's reward-function path
            (:class:`rlhfkit.models.scoring.EnsembleScorer`). The value model starts from member 0.
        preset: ``full`` | ``lora`` | ``qlora`` (or a :class:`rlhfkit.core.presets.MethodPreset`).
        layout: ``separate`` | ``shared``; default: ``separate`` for ``full``, ``shared`` with LoRA.
        reward_aggregation, reward_ensemble_coef: how an ensemble's members make one reward
            (:func:`rlhfkit.models.scoring.aggregate_rewards`).
        reference_model: the frozen reference (the KL leash) when it is not ``sft_model``, e.g. the SFT model while
            the policy starts from an earlier round's (iterative RLHF): the separate layout of preset ``full`` only.
    Returns:
        keyword arguments for :class:`PPOTrainer`: ``processing_class``, ``model``, ``ref_model``,
        ``reward_model``, ``value_model``, ``reward_processing_class``.
    """
    from peft import get_peft_model

    method = preset if isinstance(preset, MethodPreset) else method_preset(preset)
    layout = layout or ("separate" if method.lora is None else "shared")
    if layout not in ("separate", "shared"):
        raise ConfigError(f"layout={layout!r} must be 'separate' or 'shared'")
    if layout == "shared" and method.lora is None:
        raise ConfigError("layout=shared keeps policy and value as LoRA adapters; use preset lora or qlora")
    if layout == "separate" and method.quantization is not None:
        raise ConfigError("layout=separate trains a full value model, which cannot be 4-bit; use layout=shared")
    if reference_model is not None and (layout != "separate" or method.lora is not None):
        raise ConfigError(
            "reference_model apart from the starting policy needs layout=separate with preset full (a LoRA policy's "
            "reference is its own start)"
        )
    kw = {"trust_remote_code": trust_remote_code}
    members = read_ensemble(reward_model)
    ensemble = {"aggregation": reward_aggregation, "coef": reward_ensemble_coef}
    policy, tokenizer = load_policy(sft_model, method, **kw)
    out: dict[str, Any] = {"processing_class": tokenizer, "ref_model": None, "value_model": None}
    if layout == "shared" and members and all(m.adapter_dir is not None for m in members):
        shared = build_shared_base(
            policy,
            method.lora,
            reward_adapter=[m.adapter_dir for m in members],
            reward_stats=[(m.mean, m.std) for m in members],
            **ensemble,
        )
        out.update(model=shared, reward_model=None, reward_processing_class=None)
        return out
    rm, rm_tokenizer = None, tokenizer
    if members:  # scored by the ensemble as a reward function
        rm = load_reward_function(reward_model, method, **ensemble, **kw)
        rm_tokenizer = rm.members[0].tokenizer
    if layout == "separate":
        if method.lora is None:
            out["ref_model"] = load_policy(reference_model or sft_model, "full", **kw)[0].requires_grad_(False)
        else:
            policy = get_peft_model(policy, method.lora)  # reference: the same weights with the adapter off
        value_source = members[0].model_dir if members else reward_model
        if rm is None:
            rm, rm_tokenizer = load_reward_model(reward_model, "full", **kw)
            rm.requires_grad_(False)
        out["value_model"] = load_reward_model(value_source, "full", **kw)[0]  # InstructGPT: V starts as the RM
        out.update(model=policy, reward_model=rm)
    else:
        adapter = (
            None
            if members
            else next(
                (
                    d
                    for d in (os.path.join(reward_model, os.pardir, "adapter"), str(reward_model))
                    if os.path.isfile(os.path.join(d, "adapter_config.json"))
                ),
                None,
            )
        )
        if adapter is None and rm is None:
            logger.info("no reward adapter beside %s: loading the reward model separately", reward_model)
            rm_preset = method_preset("qlora") if method.quantization is not None else "full"
            rm, rm_tokenizer = load_reward_model(reward_model, rm_preset, **kw)
            rm.requires_grad_(False)
        out.update(model=build_shared_base(policy, method.lora, reward_adapter=adapter), reward_model=rm)
    same_vocab = rm_tokenizer.get_vocab() == tokenizer.get_vocab()
    out["reward_processing_class"] = None if same_vocab or members else rm_tokenizer
    return out
