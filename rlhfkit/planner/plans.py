"""Plan one training run's GPU memory: :func:`plan` resolves the run's settings (the GPU-size preset's batch sizes
and lengths unless given), adds up the model copies it holds (:mod:`rlhfkit.planner.memory`'s formulas) and, when it
does not fit, re-plans single changes to find the :class:`Suggestion` changes that do.

The run is one of rlhfkit's trainers (``presets.TRAINERS``: sft, reward, ppo, grpo, rloo, dpo, best_of_n).
``rlhfkit plan --stage`` and the ``stage`` key of :meth:`Plan.to_dict` keep their names for the command line and JSON
readers.

The alternatives to PPO: **rloo** holds what GRPO holds (policy, a reference copy when full fine-tuning with
``beta != 0``, the reward model, the generation batch's KV cache). **dpo** holds the policy and a reference copy (none
with LoRA: the adapter is disabled), forwards chosen and rejected together (``2 x batch`` sequences of ``max_length``)
and, at each log, generates :data:`rlhfkit.core.presets.DPO_KL_SAMPLES` responses to measure its KL (a KV cache that
does not overlap training). **best_of_n** alternates two phases and peaks at the larger: sampling (the policy and the
SFT model for the KL, frozen, plus the KV cache of ``generation_batch_size`` sequences; the reward model is loaded
after they are freed) and fine-tuning (an SFT run on prompt + response sequences).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from rlhfkit.core.errors import ConfigError, raise_problems
from rlhfkit.core.presets import (
    DPO_KL_MAX_NEW_TOKENS,
    DPO_KL_SAMPLES,
    GPU_SIZES,
    GRPO_BETA,
    LORA_DEFAULTS,
    METHODS,
    RLOO_BETA,
    TRAINERS,
    gpu_preset,
)
from rlhfkit.planner.dims import ModelDims, model_dims
from rlhfkit.planner.memory import (
    FIT_FRACTION,
    GIB,
    OVERHEAD_FIXED,
    OVERHEAD_FRACTION,
    activation_bytes,
    kv_cache_bytes,
    logits_bytes,
    weight_bytes,
)
from rlhfkit.rl.algorithms import ALGORITHMS

LAYOUTS = ("separate", "shared")
DEFAULT_PROMPT_LENGTH = 256  # RL trainers: prompt tokens (TRL's GRPOConfig has no prompt cap; set it per dataset)
SAMPLING_TRAINERS = tuple(n for n, a in ALGORITHMS.items() if a.samples)  # generate responses to prompts
GROUP_TRAINERS = tuple(n for n, a in ALGORITHMS.items() if a.groups)  # num_generations completions per prompt
# The config field that sets ``seq_len``, by trainer (what a suggestion names, what a config file sets).
SEQ_LEN_FIELD = {"sft": "max_length", "reward": "max_length"} | {n: a.planner_seq_field for n, a in ALGORITHMS.items()}


@dataclass
class Suggestion:
    """A change that makes the plan fit: ``overrides`` are :func:`plan` arguments, ``change`` says it in
    config-field words, ``total_bytes`` / ``verdict`` are the re-planned result."""

    change: str
    overrides: dict[str, Any]
    total_bytes: int
    verdict: str


@dataclass
class Plan:
    """The memory plan of one model x trainer x preset x GPU. Byte counts are in ``breakdown``; see
    :mod:`rlhfkit.planner.memory` for each formula. ``settings`` holds every resolved :func:`plan` argument
    (re-plannable). :meth:`to_dict` names ``trainer`` ``stage``, as ``rlhfkit plan --stage`` does."""

    model: str
    trainer: str
    preset: str
    gpu_gb: float
    settings: dict[str, Any]
    copies: list[tuple[str, int]]
    breakdown: dict[str, int]
    activations_full: int
    activations_checkpointed: int
    total_bytes: int
    capacity_bytes: int
    verdict: str
    dims: ModelDims
    suggestions: list[Suggestion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        """True when the plan uses at most 90% of the GPU (``tight`` plans do not count)."""
        return self.verdict == "fits"

    def to_dict(self) -> dict[str, Any]:
        out = {("stage" if key == "trainer" else key): value for key, value in asdict(self).items()}
        out["copies"] = [{"model": name, "bytes": b} for name, b in self.copies]
        out["total_gib"] = round(self.total_bytes / GIB, 2)
        return out


def _preset_size(gpu_gb: float) -> int:
    """The GPU-size preset a ``gpu_gb`` GPU uses: the largest one not above it (8 for smaller GPUs)."""
    return max([s for s in GPU_SIZES if s <= gpu_gb] or [GPU_SIZES[0]])


def _verdict(total: int, capacity: int) -> str:
    if total <= FIT_FRACTION * capacity:
        return "fits"
    return "tight" if total <= capacity else "does not fit"


def _dtype_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


# ------------------------------------------------------------------------------------------------ the plan
def plan(
    model: str | os.PathLike | ModelDims,
    trainer: str,
    preset: str = "qlora",
    gpu_gb: float = 24,
    *,
    layout: str | None = None,
    reward_members: int = 1,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    seq_len: int | None = None,
    prompt_length: int | None = None,
    num_generations: int | None = None,
    generation_batch_size: int | None = None,
    rollout_batch_size: int | None = None,
    gradient_checkpointing: bool | None = None,
    beta: float | None = None,
    lora_r: int | None = None,
    attention: str | None = None,
    fused_lm_head: bool = True,
    precision: str = "bf16",
    suggest: bool = True,
) -> Plan:
    """Plan the GPU memory of training ``model`` with ``trainer`` and method ``preset`` on a ``gpu_gb`` GiB GPU.

    Args:
        model: hub id (HF cache or :data:`KNOWN_MODELS`), local folder, or :class:`ModelDims`.
        trainer: ``sft`` | ``reward`` | ``ppo`` | ``grpo`` (``rlhfkit plan --stage``).
        preset: ``full`` | ``lora`` | ``qlora``.
        gpu_gb: GPU memory in GiB; batch sizes and lengths default to the GPU-size preset not above it.
        layout: PPO only: ``separate`` (policy, reference, reward and value models; with peft the reference is
            the policy with its adapter disabled) or ``shared`` (one base + policy / value / reward adapters;
            lora/qlora only). Defaults to ``shared`` with peft, ``separate`` for full fine-tuning.
        reward_members: RL trainers: reward models in the ensemble (``reward.ensemble_size``). With peft they are
            adapters + heads on one reward base (on the shared base for PPO ``shared``); full: one copy each. The
            reward trainer trains them one after another (no extra memory).
        batch_size, grad_accum: per-device batch (pairs for ``reward``) and accumulation steps.
        seq_len: ``max_length`` (sft, reward) or the response length (ppo ``response_length``, grpo
            ``max_completion_length``).
        prompt_length: RL trainers: prompt tokens (default 256).
        num_generations, generation_batch_size: GRPO / RLOO (generation batch defaults to ``batch * grad_accum``);
            best_of_n: sequences generated at once (default: the GPU preset's).
        rollout_batch_size: PPO ``local_rollout_forward_batch_size`` (sequences generated at once).
        gradient_checkpointing: defaults to the GPU preset's choice.
        beta: GRPO / RLOO KL coefficient; a full-fine-tuning reference copy is planned when it is not 0 (defaults
            :data:`rlhfkit.core.presets.GRPO_BETA` / :data:`rlhfkit.core.presets.RLOO_BETA`).
        lora_r: LoRA rank (default ``LORA_DEFAULTS["r"]``).
        attention: ``sdpa`` (flash / memory-efficient kernels, default) or ``eager`` (default for Gemma-2, whose
            logit soft-capping SDPA does not support).
        fused_lm_head: whether the LM head loss is fused (TRL 1.16's default for SFT and GRPO).
        precision: ``bf16`` (rlhfkit's default on GPUs), ``mixed`` (fp32 master weights) or ``fp32`` (CPU).
        suggest: compute suggestions when the plan does not fit.
    """
    layout = _checked_layout(trainer, preset, precision, gpu_gb, layout, reward_members)
    counts = {
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "seq_len": seq_len,
        "prompt_length": prompt_length,
        "generation_batch_size": generation_batch_size,
        "rollout_batch_size": rollout_batch_size,
        "lora_r": lora_r,
    }
    _check_counts(counts, num_generations)
    dims = model_dims(model)
    defaults = gpu_preset(_preset_size(gpu_gb), trainer)
    bs = int(batch_size or defaults["per_device_train_batch_size"])
    accum = int(grad_accum or defaults["gradient_accumulation_steps"])
    ckpt = bool(defaults["gradient_checkpointing"] if gradient_checkpointing is None else gradient_checkpointing)
    settings: dict[str, Any] = {
        "layout": layout,
        "batch_size": bs,
        "grad_accum": accum,
        "gradient_checkpointing": ckpt,
        "lora_r": int(lora_r or LORA_DEFAULTS["r"]),
        "attention": attention or ("eager" if dims.model_type == "gemma2" else "sdpa"),
        "fused_lm_head": fused_lm_head,
        "precision": precision,
        "seq_len": int(seq_len or defaults[SEQ_LEN_FIELD[trainer]]),
    }
    if trainer in SAMPLING_TRAINERS:
        settings["prompt_length"] = int(prompt_length or DEFAULT_PROMPT_LENGTH)
        settings["reward_members"] = int(reward_members)
    if trainer == "ppo":
        settings["rollout_batch_size"] = int(rollout_batch_size or defaults["local_rollout_forward_batch_size"])
    if trainer in GROUP_TRAINERS:
        default_beta = GRPO_BETA if trainer == "grpo" else RLOO_BETA
        beta = default_beta if beta is None else beta
        settings.update(_grpo_settings(defaults, bs, accum, num_generations, generation_batch_size, beta))
    if trainer == "best_of_n":
        settings["generation_batch_size"] = int(generation_batch_size or defaults["generation_batch_size"])
    return _plan_settings(dims, dims.name or str(model), trainer, preset, gpu_gb, settings, suggest=suggest)


def _check_counts(counts: dict[str, int | None], num_generations: int | None) -> None:
    """Sizes given to :func:`plan` must be whole numbers >= 1 (``num_generations`` >= 2); None takes the preset's."""
    flags = ("batch_size", "grad_accum", "seq_len", "prompt_length")  # `rlhfkit plan --batch-size` etc.
    problems = [
        f"{name}={value!r} must be a whole number >= 1"
        + (f" (--{name.replace('_', '-')})" if name in flags else "")
        + ", or leave it out for the GPU preset's"
        for name, value in counts.items()
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
    ]
    if num_generations is not None and (not isinstance(num_generations, int) or num_generations < 2):
        problems.append(f"num_generations={num_generations!r} must be >= 2: GRPO compares completions of a prompt")
    raise_problems(problems)


def _checked_layout(
    trainer: str, preset: str, precision: str, gpu_gb: float, layout: str | None, reward_members: int = 1
) -> str | None:
    """Validate :func:`plan`'s choices (one-line errors naming the value); returns the PPO layout (None otherwise)."""
    if trainer not in TRAINERS:
        raise ConfigError(f"trainer={trainer!r} is not one of rlhfkit's trainers; choose one of {list(TRAINERS)}")
    if preset not in METHODS:
        raise ConfigError(f"preset={preset!r} is not a method preset; choose one of {list(METHODS)}")
    if precision not in ("bf16", "mixed", "fp32"):
        raise ConfigError(f"precision={precision!r} is not supported; choose bf16, mixed or fp32")
    if not gpu_gb or gpu_gb <= 0:
        raise ConfigError(f"gpu={gpu_gb!r} must be the GPU memory in GB, e.g. --gpu 24")
    if not isinstance(reward_members, int) or reward_members < 1:
        raise ConfigError(f"reward_members={reward_members!r} must be a whole number >= 1 (reward.ensemble_size)")
    peft = preset != "full"
    if trainer != "ppo":
        if layout is not None:
            raise ConfigError(f"layout={layout!r} applies to stage=ppo only; drop it for stage={trainer}")
        return None
    layout = layout or ("shared" if peft else "separate")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout={layout!r} is not a PPO layout; choose one of {list(LAYOUTS)}")
    if layout == "shared" and not peft:
        raise ConfigError("layout='shared' needs LoRA adapters; use preset=lora or qlora, or layout=separate")
    return layout


def _grpo_settings(
    defaults: dict[str, Any],
    bs: int,
    accum: int,
    num_generations: int | None,
    generation_batch_size: int | None,
    beta: float | None,
) -> dict[str, Any]:
    """GRPO's / RLOO's generation batch (checked against the per-device batch) and KL coefficient."""
    n_gen = int(num_generations or defaults["num_generations"])
    gen_batch = int(generation_batch_size or bs * accum)
    if gen_batch % n_gen or gen_batch % bs:
        raise ConfigError(
            f"generation_batch_size={gen_batch} must be divisible by num_generations={n_gen} and by "
            f"per_device_train_batch_size={bs}; change one of them"
        )
    return {"num_generations": n_gen, "generation_batch_size": gen_batch, "beta": float(beta)}


def _plan_settings(
    dims: ModelDims, name: str, trainer: str, preset: str, gpu_gb: float, settings: dict[str, Any], *, suggest: bool
) -> Plan:
    """Add up the memory of a run whose ``settings`` are resolved; the verdict, and suggestions if asked."""
    notes: list[str] = []
    length = settings["seq_len"] + settings.get("prompt_length", 0)  # tokens per sequence
    if dims.max_position_embeddings and length > dims.max_position_embeddings:
        notes.append(f"{length} tokens exceed the model's max_position_embeddings={dims.max_position_embeddings}")
    copies, adapters, gradients = _model_memory(dims, trainer, preset, settings, notes)
    act_full, act_ckpt, logits, kv = _sequence_memory(dims, trainer, preset, settings, length, notes)
    activations = act_ckpt if settings["gradient_checkpointing"] else act_full
    weights = sum(b for _, b in copies)
    optimizer = 2 * gradients  # AdamW exp_avg + exp_avg_sq, in the parameter's dtype
    if trainer == "best_of_n":  # sampling and fine-tuning alternate: the run peaks at the larger phase
        frozen = weight_bytes(dims, quantized=preset == "qlora", dtype_bytes=_dtype_bytes(settings["precision"]))
        sampling = 2 * frozen + kv  # the policy and the SFT model (KL) loaded together, frozen, + the KV cache
        subtotal = max(weights + adapters + gradients + optimizer + activations + logits, sampling)
        notes.append(
            f"sampling phase: policy + SFT model + KV cache = {sampling / GIB:.1f} GiB; fine-tuning phase: the rest "
            "of the breakdown (the reward model scores after the sampling models are freed)"
        )
    else:
        subtotal = weights + adapters + gradients + optimizer + max(activations + logits, kv)
    overhead = OVERHEAD_FIXED + int(OVERHEAD_FRACTION * subtotal)
    total = subtotal + overhead
    capacity = int(gpu_gb * GIB)
    breakdown = {
        "weights": weights,
        "adapters": adapters,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
        "kv_cache": kv,
        "overhead": overhead,
    }
    result = Plan(
        model=name,
        trainer=trainer,
        preset=preset,
        gpu_gb=gpu_gb,
        settings=settings,
        copies=copies,
        breakdown=breakdown,
        activations_full=act_full,
        activations_checkpointed=act_ckpt,
        total_bytes=total,
        capacity_bytes=capacity,
        verdict=_verdict(total, capacity),
        dims=dims,
        notes=notes,
    )
    if suggest and not result.fits:
        result.suggestions = _suggestions(result)
        if not result.suggestions:
            notes.append(
                f"no change the planner knows makes it fit in {gpu_gb:g} GB; use a larger GPU or a smaller model"
            )
    return result


def _model_memory(
    dims: ModelDims, trainer: str, preset: str, settings: dict[str, Any], notes: list[str]
) -> tuple[list[tuple[str, int]], int, int]:
    """The model copies the trainer holds ``[(name, bytes)]``, the LoRA adapters' and heads' bytes, and the
    gradients' bytes (one per trainable parameter, in its dtype)."""
    peft, quant = preset != "full", preset == "qlora"
    wb = _dtype_bytes(settings["precision"])
    master = 4 if settings["precision"] in ("mixed", "fp32") else 2  # bytes of a fully trained parameter (and grad)
    base = {h: weight_bytes(dims, quantized=quant, dtype_bytes=wb, head=h) for h in ("causal", "score")}
    full_trainable = {h: weight_bytes(dims, dtype_bytes=master, head=h) for h in ("causal", "score")}
    n_score = dims.n_params - dims.lm_head_params + dims.hidden_size
    lora = dims.lora_params(settings["lora_r"])
    copies: list[tuple[str, int]] = []
    trainable: list[tuple[int, int]] = []  # (params, bytes per param)
    adapters = 0
    disabled_ref = "reference = the policy with its adapter disabled (no copy)"

    def add_trainable(name: str, h: str) -> None:
        nonlocal adapters
        if peft:
            copies.append((f"{name} base" + (" (4-bit)" if quant else ""), base[h]))
            adapters += lora * 4 + (dims.hidden_size * wb if h == "score" else 0)
            trainable.extend([(lora, 4)] + ([(dims.hidden_size, wb)] if h == "score" else []))
        else:
            copies.append((name, full_trainable[h]))
            trainable.append((dims.n_params if h == "causal" else n_score, master))

    def add_frozen(name: str, h: str) -> None:
        copies.append((name + (" (4-bit)" if quant else ""), base[h]))

    def add_rewards() -> None:  # the reward model, or an ensemble: K adapters + heads on one base (peft) / K copies
        k = settings.get("reward_members", 1)
        if k == 1 or not peft:
            for i in range(k):
                add_frozen("reward model" + (f" {i}" if k > 1 else ""), "score")
            return
        nonlocal adapters
        add_frozen(f"reward base ({k} members)", "score")
        adapters += k * (lora * 4 + dims.hidden_size * wb)  # peft loads adapters in fp32
        notes.append(f"reward ensemble: {k} frozen adapters + heads on one reward base")

    if trainer == "sft":
        add_trainable("policy", "causal")
    elif trainer == "reward":
        add_trainable("reward model", "score")
    elif trainer in GROUP_TRAINERS:
        add_trainable("policy", "causal")
        if settings["beta"] == 0:
            notes.append("beta=0: no reference model")
        elif peft:
            notes.append(disabled_ref)
        else:
            add_frozen("reference", "causal")
        add_rewards()
    elif trainer == "dpo":
        add_trainable("policy", "causal")
        if peft:
            notes.append(disabled_ref)
        else:
            add_frozen("reference", "causal")
    elif trainer == "best_of_n":
        add_trainable("policy (fine-tuning phase)", "causal")
    elif settings["layout"] == "separate":
        add_trainable("policy", "causal")
        if peft:
            notes.append(disabled_ref)
        else:
            add_frozen("reference", "causal")
        add_rewards()
        add_trainable("value model", "score")
    else:  # ppo, shared base
        copies.append(("shared base" + (" (4-bit)" if quant else ""), base["causal"]))
        k = settings.get("reward_members", 1)
        # policy, value (trained, fp32 LoRA) + K frozen reward adapters, value head + K reward heads
        adapters = 2 * lora * 4 + k * lora * 4 + (1 + k) * dims.hidden_size * wb
        trainable.extend([(lora, 4), (lora, 4), (dims.hidden_size, wb)])
        rewards = f"{k} reward models" if k > 1 else "reward"
        notes.append(f"one base: reference = adapters disabled; policy, value and {rewards} are adapters on it")
    return copies, adapters, sum(n * b for n, b in trainable)


def _sequence_memory(
    dims: ModelDims, trainer: str, preset: str, settings: dict[str, Any], length: int, notes: list[str]
) -> tuple[int, int, int, int]:
    """Activations without and with gradient checkpointing, logits, and the generation KV cache (RL trainers)."""
    e = _dtype_bytes(settings["precision"])
    forwards = 2 if trainer == "ppo" else 1  # PPO backpropagates through the policy and the value model
    tokens = settings["batch_size"] * length * (2 if trainer in ("reward", "dpo") else 1)  # pairs: both sides
    act_kwargs = {"act_bytes": e, "attention": settings["attention"]}
    act_kwargs["lora_r"] = settings["lora_r"] if preset != "full" else None
    act_full = forwards * activation_bytes(dims, tokens, length, checkpointing=False, **act_kwargs)
    act_ckpt = forwards * activation_bytes(dims, tokens, length, checkpointing=True, **act_kwargs)
    fused = settings["fused_lm_head"]
    logits = 0 if trainer == "reward" else logits_bytes(dims, tokens, fused=fused, act_bytes=e)
    kv = 0
    if trainer == "ppo":
        kv = kv_cache_bytes(dims, settings["rollout_batch_size"], length, e)
    elif trainer in (*GROUP_TRAINERS, "best_of_n"):
        kv = kv_cache_bytes(dims, settings["generation_batch_size"], length, e)
    elif trainer == "dpo":  # the KL measurement at each log: prompts up to max_length, then the sampled responses
        kv = kv_cache_bytes(dims, DPO_KL_SAMPLES, length + DPO_KL_MAX_NEW_TOKENS, e)
    if kv and trainer != "best_of_n":
        notes.append("generation (KV cache) and training (activations + logits) do not overlap: peak = the larger")
    return act_full, act_ckpt, logits, kv


# --------------------------------------------------------------------------------------------- suggestions
def _describe(trainer: str, overrides: dict[str, Any]) -> str:
    names = {
        "batch_size": "per_device_train_batch_size",
        "grad_accum": "gradient_accumulation_steps",
        "seq_len": SEQ_LEN_FIELD[trainer],
        "rollout_batch_size": "local_rollout_forward_batch_size",
    }
    return ", ".join(f"{names.get(k, k)}={v}" for k, v in overrides.items() if v is not None)


def _halvings(value: int, floor: int) -> list[int]:
    out = []
    while value // 2 >= floor:
        value //= 2
        out.append(value)
    return out


def _candidates(p: Plan) -> list[list[dict[str, Any]]]:
    """Groups of alternative overrides, least disruptive first; from each group the first that fits is kept."""
    s, trainer = p.settings, p.trainer
    groups: list[list[dict[str, Any]]] = []
    if not s["gradient_checkpointing"]:
        groups.append([{"gradient_checkpointing": True}])
    bs, accum = s["batch_size"], s["grad_accum"]
    smaller = []
    for b in _halvings(bs, 1):
        o = {"batch_size": b, "grad_accum": accum * bs // b}
        if trainer in GROUP_TRAINERS and s["generation_batch_size"] % b:
            continue
        smaller.append(o)
    groups.append(smaller)
    if trainer == "best_of_n":
        groups.append([{"generation_batch_size": x} for x in _halvings(s["generation_batch_size"], 1)])
    if trainer in GROUP_TRAINERS:
        n, g = s["num_generations"], s["generation_batch_size"]
        groups.append([{"generation_batch_size": x} for x in _halvings(g, 1) if x % n == 0 and x % bs == 0])
        fewer = [{"num_generations": m, "generation_batch_size": g * m // n} for m in _halvings(n, 2)]
        groups.append([o for o in fewer if o["generation_batch_size"] % bs == 0])
    if trainer == "ppo":
        if s["layout"] == "separate" and p.preset != "full":
            groups.append([{"layout": "shared"}])
        groups.append([{"rollout_batch_size": x} for x in _halvings(s["rollout_batch_size"], 1)])
    methods = [m for m in ("lora", "qlora") if METHODS.index(m) > METHODS.index(p.preset)]
    groups.append([{"preset": m, **({"layout": None} if trainer == "ppo" else {})} for m in methods])
    groups.append([{"seq_len": x} for x in _halvings(s["seq_len"], 64)])
    return groups


def _replan(p: Plan, overrides: dict[str, Any]) -> Plan:
    kwargs = {**p.settings, "preset": p.preset, **overrides}
    if p.trainer == "ppo" and kwargs.get("preset") == "full":
        kwargs["layout"] = "separate"
    preset = kwargs.pop("preset")
    return plan(p.dims, p.trainer, preset, p.gpu_gb, suggest=False, **kwargs)


def _suggestions(p: Plan) -> list[Suggestion]:
    """Single changes that fit when re-planned; when none does, one combination of them that does."""
    found = []
    groups = _candidates(p)
    for group in groups:
        for overrides in group:
            q = _replan(p, overrides)
            if q.fits:
                found.append(Suggestion(_describe(p.trainer, overrides), overrides, q.total_bytes, q.verdict))
                break
    if found:
        return found
    combined: dict[str, Any] = {}
    for group in groups:  # apply the most aggressive option of every group in turn until it fits
        if not group:
            continue
        for overrides in group:
            q = _replan(p, {**combined, **overrides})
            if q.fits:
                combined.update(overrides)
                return [Suggestion(_describe(p.trainer, combined), combined, q.total_bytes, q.verdict)]
        combined.update(group[-1])
    return []
