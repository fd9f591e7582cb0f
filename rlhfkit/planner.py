"""Memory planner: will a model x stage x preset fit on a GPU, and if not, what change makes it fit?

``plan("Qwen/Qwen2.5-1.5B-Instruct", "ppo", "qlora", 12)`` returns a :class:`Plan`: a breakdown in bytes
(weights of every model copy the stage holds, LoRA adapters, gradients, optimiser state, activations with
and without gradient checkpointing, logits, generation KV cache, CUDA overhead), a verdict (``fits`` /
``tight`` / ``does not fit``) and, when it does not fit, concrete changes, each re-planned to check it fits.
Nothing here imports torch or touches the network: model dimensions come from a local ``config.json``, the
Hugging Face cache, or :data:`KNOWN_MODELS` (an offline table of real config values).

Formulas (bytes; ``b`` sequences of ``s`` tokens, ``N = b*s``; ``h`` hidden, ``L`` layers, ``a``/``kv`` query /
key-value heads of size ``d``, ``i`` MLP width, ``V`` vocabulary; ``e`` = activation bytes, 2 in bf16)
-------------------------------------------------------------------------------------------------------------
* **Parameters** (:meth:`ModelDims.count_params`), Llama-style decoder (gated MLP, RMSNorm, no biases)::

      n = V*h [embed] + L*(h*a*d + 2*h*kv*d + a*d*h [attn] + 3*h*i [mlp] + k*h [norms]) + h [final norm]
          + V*h [lm_head, only when not tied]

  with ``k = 2`` norms per layer (4 for Gemma-2), ``+ a*d + 2*kv*d`` q/k/v biases for Qwen2 and ``+ 2*d``
  q/k norms for Qwen3. It equals ``sum(p.numel())`` of the transformers model exactly (tests).
* **Weights**: ``n * 2`` in bf16. 4-bit (bitsandbytes NF4 with double quantisation, as the qlora preset sets):
  each decoder linear costs ``numel/2`` (packed) ``+ numel/64`` (uint8 absmax, blocks of 64) ``+ 4*numel/16384``
  (fp32 second-level absmax) ``+ 1092`` (per-tensor code books and offset); embeddings, lm_head, norms and
  biases stay in the compute dtype. Plus the rotary ``inv_freq`` buffers (``4*d`` bytes, fp32).
* **LoRA** (``target_modules="all-linear"``: every decoder linear, not lm_head): ``r*(in + out)`` per adapted
  linear. peft keeps adapters in fp32 on a 16-bit base (``autocast_adapter_dtype=True``; TRL 1.16 uses it).
* **Gradients and AdamW**: one gradient per trainable parameter, in its dtype; AdamW keeps ``exp_avg`` and
  ``exp_avg_sq`` in the parameter's dtype (torch). rlhfkit loads models in the compute dtype (bf16), so full
  fine-tuning costs 2 (weight) + 2 (grad) + 4 (m, v) = 8 bytes/param and LoRA 4 + 4 + 8 = 16 bytes per fp32
  adapter param. ``precision="mixed"`` plans fp32 master weights under bf16 autocast instead: 4 + 4 + 8 = 16
  bytes per trainable param (the ZeRO paper's count, Rajbhandari et al. 2020) with frozen copies in bf16.
* **Activations** kept for backward, per layer, after Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models", sec. 4.1: ``s*b*h*(34 + 5*a*s/h)`` for a GPT layer in 16-bit)
  adapted to the layers transformers runs (RMSNorm in fp32, gated MLP, GQA, no dropout) and checked against
  the tensors autograd saves (tests)::

      per RMSNorm   N*h*(4 + 2e) + 4N        fp32 upcast input, normalised and output copies
      attention     e*N*(2*a*d + 2*kv*d) + 4*N*a        q, k, v, output + logsumexp (SDPA / flash)
        eager       4*e*N*a*d + (4 + e)*a*s*N           repeated k/v and the s x s scores (fp32 softmax + copy)
      mlp           4*e*N*i                              gate, act(gate), up, product
      LoRA          (e + 1)*N*sum(in_features) + e*N*r*n_linear   dropout output (+ 1-byte mask) per adapter

  With gradient checkpointing (transformers checkpoints each decoder layer) only the layer inputs
  ``L*e*N*h`` are kept, plus one layer's activations while it is recomputed.
* **Logits**: TRL 1.16's SFT/GRPO trainers (and rlhfkit's PPO) use a fused LM head that scores tiles of
  ``4096 tokens x 32768 vocab`` and never builds the ``N x V`` logits: ``min(N, 4096) * min(V, 32768) * 4 * 2``
  (fp32 tile + its gradient). Unfused (``fused_lm_head=False``): ``N*V*(e + 4 + 4)`` (logits, their fp32 upcast
  and the fp32 log-softmax kept for backward). Reward / value heads output one number per token: negligible.
* **Generation KV cache** (RL stages): ``2*L*kv*d*(prompt + response)*batch*2`` bytes (bf16 cache). It is
  freed before the training forward, so an RL plan counts ``max(KV cache, activations + logits)``.
* **Overhead**: 1 GiB (CUDA context, cuBLAS workspaces, allocator slack) + 10% of everything else for
  fragmentation. Verdict: ``fits`` up to 90% of the GPU, ``tight`` up to 100%, else ``does not fit``.

Assumptions: every sequence is padded to the full length (the worst batch); the reward stage forwards
chosen and rejected together (``2*b`` sequences); RL stages use a reward model of the same size as the
policy; GRPO generates a whole generation batch (``b * gradient_accumulation_steps`` by default) at once.

What is not validated here: activations, KV cache and overhead are not measured on a GPU -- the CPU tests
check the saved-tensor count, not the CUDA allocator's peak (transient buffers, kernel workspaces and
fragmentation are only covered by the overhead term).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlhfkit.errors import ConfigError
from rlhfkit.presets import GPU_SIZES, GRPO_BETA, LORA_DEFAULTS, METHODS, TRAINERS, gpu_preset

GIB = 2**30
LAYOUTS = ("separate", "shared")
DEFAULT_PROMPT_LENGTH = 256  # RL stages: prompt tokens (TRL's GRPOConfig has no prompt cap; set it per dataset)
FIT_FRACTION = 0.9  # "fits" below 90% of the GPU; "tight" up to 100%
OVERHEAD_FIXED = 1 * GIB  # CUDA context + cuBLAS workspace + allocator slack
OVERHEAD_FRACTION = 0.10  # fragmentation of the caching allocator
QUANT_BLOCK, QUANT_BLOCK2, QUANT_TENSOR_CONSTANTS = 64, 256, 16 * 4 + 256 * 4 + 4  # NF4 + double quantisation
FUSED_TOKENS, FUSED_VOCAB = 4096, 32768  # TRL's fused LM head tile


# ---------------------------------------------------------------------------------------------- dimensions
@dataclass(frozen=True)
class ModelDims:
    """A decoder's dimensions, as ``config.json`` gives them, and its parameter count.

    ``n_params`` is computed from the dimensions (:meth:`count_params`), never copied from a model card.
    """

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    attention_bias: bool = False
    source: str = "table"  # table | local | cache
    n_params: int = 0

    def __post_init__(self):
        if not self.n_params:
            object.__setattr__(self, "n_params", self.count_params())

    @property
    def norms_per_layer(self) -> int:
        return 4 if self.model_type.startswith(("gemma2", "gemma3")) else 2

    @property
    def fused_projections(self) -> bool:
        """Phi-3 fuses q/k/v into one linear and gate/up into another."""
        return self.model_type == "phi3"

    def linear_shapes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of each linear in one decoder layer (what bitsandbytes quantises and LoRA adapts)."""
        h, i = self.hidden_size, self.intermediate_size
        q, k = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        if self.fused_projections:
            return [(h, q + 2 * k), (q, h), (h, 2 * i), (i, h)]
        return [(h, q), (h, k), (h, k), (q, h), (h, i), (h, i), (i, h)]

    def count_params(self) -> int:
        h = self.hidden_size
        layer = sum(a * b for a, b in self.linear_shapes()) + self.norms_per_layer * h
        if self.attention_bias:  # Qwen2: q/k/v biases; Llama-style attention_bias=True: o_proj's too
            layer += (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
            layer += h if self.model_type != "qwen2" else 0
        if self.model_type.startswith(("qwen3", "gemma3")):
            layer += 2 * self.head_dim  # q_norm, k_norm
        embed = self.vocab_size * h
        return embed + self.num_layers * layer + h + (0 if self.tie_word_embeddings else embed)

    @property
    def lm_head_params(self) -> int:
        """Parameters a causal LM has beyond a sequence classifier (the untied output projection)."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params(self) -> int:
        return self.num_layers * sum(a * b for a, b in self.linear_shapes())

    def lora_params(self, r: int) -> int:
        return self.num_layers * sum(r * (a + b) for a, b in self.linear_shapes())

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str = "", source: str = "local") -> ModelDims:
        """Read the fields of a transformers ``config.json`` (multimodal ones: their ``text_config``)."""
        cfg = {**config, **config.get("text_config", {})}
        moe = [k for k in ("num_local_experts", "num_experts", "n_routed_experts") if cfg.get(k)]
        if moe:
            raise ConfigError(
                f"model={name!r} is a mixture-of-experts model ({moe[0]}); the planner covers dense models"
            )
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            layers, vocab = int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
        except KeyError as e:
            raise ConfigError(f"config.json of model={name!r} lacks {e.args[0]!r}; is it a decoder LM config?") from e
        model_type = str(cfg.get("model_type", "llama"))
        tie_default = model_type.startswith("gemma")  # transformers' class defaults: Gemma ties, Llama-likes do not
        return cls(
            name=name,
            model_type=model_type,
            hidden_size=hidden,
            num_layers=layers,
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate_size=int(cfg.get("intermediate_size") or 4 * hidden),
            vocab_size=vocab,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", tie_default)),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 0),
            attention_bias=bool(cfg.get("attention_bias", model_type == "qwen2")),
            source=source,
        )


def _cfg(model_type, hidden, layers, heads, kv, inter, vocab, tie, max_pos, head_dim=None) -> dict[str, Any]:
    return {
        "model_type": model_type, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "intermediate_size": inter, "vocab_size": vocab, "tie_word_embeddings": tie,
        "max_position_embeddings": max_pos, "head_dim": head_dim,
    }  # fmt: skip


# Real config.json values of models people fine-tune on consumer GPUs (the base models share them).
# fmt: off
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": _cfg("llama", 576, 30, 9, 3, 1536, 49152, True, 8192),
    "HuggingFaceTB/SmolLM2-360M-Instruct": _cfg("llama", 960, 32, 15, 5, 2560, 49152, True, 8192),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": _cfg("llama", 2048, 24, 32, 32, 8192, 49152, True, 8192),
    "Qwen/Qwen2.5-0.5B-Instruct": _cfg("qwen2", 896, 24, 14, 2, 4864, 151936, True, 32768),
    "Qwen/Qwen2.5-1.5B-Instruct": _cfg("qwen2", 1536, 28, 12, 2, 8960, 151936, True, 32768),
    "Qwen/Qwen2.5-3B-Instruct": _cfg("qwen2", 2048, 36, 16, 2, 11008, 151936, True, 32768),
    "Qwen/Qwen2.5-7B-Instruct": _cfg("qwen2", 3584, 28, 28, 4, 18944, 152064, False, 32768),
    "meta-llama/Llama-3.2-1B-Instruct": _cfg("llama", 2048, 16, 32, 8, 8192, 128256, True, 131072, 64),
    "meta-llama/Llama-3.2-3B-Instruct": _cfg("llama", 3072, 28, 24, 8, 8192, 128256, True, 131072, 128),
    "meta-llama/Llama-3.1-8B-Instruct": _cfg("llama", 4096, 32, 32, 8, 14336, 128256, False, 131072, 128),
    "mistralai/Mistral-7B-Instruct-v0.3": _cfg("mistral", 4096, 32, 32, 8, 14336, 32768, False, 32768, 128),
    "google/gemma-2-2b-it": _cfg("gemma2", 2304, 26, 8, 4, 9216, 256000, True, 8192, 256),
    "microsoft/Phi-3-mini-4k-instruct": _cfg("phi3", 3072, 32, 32, 32, 8192, 32064, False, 4096),
}
# fmt: on


def _table_key(name: str) -> str | None:
    """The KNOWN_MODELS key for ``name`` (case-insensitive; base models map to their -Instruct / -it twin)."""
    wanted = name.strip().lower()
    for key in KNOWN_MODELS:
        base = key.removesuffix("-Instruct").removesuffix("-it").replace("-Instruct-v0.3", "-v0.3")
        if wanted in (key.lower(), base.lower()):
            return key
    return None


def _hf_cache_config(name: str) -> Path | None:
    """``config.json`` of hub id ``name`` in the local Hugging Face cache, if present (never downloads)."""
    if name.count("/") != 1:
        return None
    home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    cache = Path(os.environ.get("HF_HUB_CACHE", os.path.join(home, "hub")))
    repo = cache / f"models--{name.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidate = repo / "snapshots" / ref.read_text().strip() / "config.json"
        if candidate.is_file():
            return candidate
    found = sorted((repo / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def model_dims(model: str | os.PathLike | ModelDims) -> ModelDims:
    """Dimensions of ``model``: a local folder, a hub id in the HF cache or in :data:`KNOWN_MODELS`.

    A folder holding only a peft adapter is followed to its ``base_model_name_or_path``. Raises ConfigError
    for anything else (the planner never goes to the network).
    """
    if isinstance(model, ModelDims):
        return model
    name = str(model)
    folder = Path(os.path.expanduser(name))
    if folder.is_dir():
        if (folder / "config.json").is_file():
            return ModelDims.from_config(json.loads((folder / "config.json").read_text()), name, "local")
        if (folder / "adapter_config.json").is_file():
            base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if base:
                return model_dims(base)
        raise ConfigError(f"model={name!r} is a folder without config.json; give a model folder saved by transformers")
    cached = _hf_cache_config(name)
    if cached is not None:
        return ModelDims.from_config(json.loads(cached.read_text()), name, "cache")
    key = _table_key(name)
    if key is not None:
        return ModelDims.from_config(KNOWN_MODELS[key], key, "table")
    raise ConfigError(
        f"model={name!r} is not a local folder, not in the Hugging Face cache and not in the planner's offline "
        f"table; give a local model folder with a config.json, or one of: {', '.join(KNOWN_MODELS)}"
    )


# ------------------------------------------------------------------------------------------- byte counts
def _dtype_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def weight_bytes(dims: ModelDims, *, quantized: bool = False, dtype_bytes: int = 2, head: str = "causal") -> int:
    """Bytes of one model copy. ``head``: ``causal`` (with lm_head) or ``score`` (sequence classifier, 1 label)."""
    n = dims.n_params - (dims.lm_head_params if head == "score" else 0) + (dims.hidden_size if head == "score" else 0)
    buffers = 2 * 4 * (dims.head_dim // 2)  # rotary inv_freq + original_inv_freq, fp32
    if not quantized:
        return n * dtype_bytes + buffers
    packed = 0
    for a, b in dims.linear_shapes():
        numel = a * b
        blocks = math.ceil(numel / QUANT_BLOCK)
        packed += math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / QUANT_BLOCK2) + QUANT_TENSOR_CONSTANTS
    return dims.num_layers * packed + (n - dims.linear_params) * dtype_bytes + buffers


def activation_bytes(
    dims: ModelDims,
    tokens: int,
    seq_len: int,
    *,
    checkpointing: bool,
    act_bytes: int = 2,
    attention: str = "sdpa",
    lora_r: int | None = None,
    lora_dropout: bool = True,
) -> int:
    """Bytes autograd keeps for one forward of ``tokens = b*s`` tokens (see the module docstring)."""
    e, n, h, d = act_bytes, tokens, dims.hidden_size, dims.head_dim
    a, kv, i = dims.num_heads, dims.num_kv_heads, dims.intermediate_size
    norm = n * h * (4 + 2 * e) + 4 * n
    if attention == "eager":
        attn = 4 * e * n * a * d + (4 + e) * a * seq_len * n
    else:
        attn = e * n * (2 * a * d + 2 * kv * d) + 4 * n * a
    layer = dims.norms_per_layer * norm + attn + 4 * e * n * i
    if lora_r:
        shapes = dims.linear_shapes()
        layer += (e + (1 if lora_dropout else 0)) * n * sum(x for x, _ in shapes) + e * n * lora_r * len(shapes)
    final_norm = norm
    if checkpointing:
        return dims.num_layers * e * n * h + layer + final_norm
    return dims.num_layers * layer + final_norm


def logits_bytes(dims: ModelDims, tokens: int, *, fused: bool = True, act_bytes: int = 2) -> int:
    if fused:
        return min(tokens, FUSED_TOKENS) * min(dims.vocab_size, FUSED_VOCAB) * 4 * 2
    return tokens * dims.vocab_size * (act_bytes + 4 + 4)


def kv_cache_bytes(dims: ModelDims, batch: int, length: int, cache_bytes: int = 2) -> int:
    return 2 * dims.num_layers * dims.num_kv_heads * dims.head_dim * length * batch * cache_bytes


# ------------------------------------------------------------------------------------------------ the plan
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
    """The memory plan of one model x stage x preset x GPU. Byte counts are in ``breakdown``; see the module
    docstring for each formula. ``settings`` holds every resolved :func:`plan` argument (re-plannable)."""

    model: str
    stage: str
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
        out = asdict(self)
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


def plan(
    model: str | os.PathLike | ModelDims,
    stage: str,
    preset: str = "qlora",
    gpu_gb: float = 24,
    *,
    layout: str | None = None,
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
    """Plan the GPU memory of training ``model`` at ``stage`` with method ``preset`` on a ``gpu_gb`` GiB GPU.

    Args:
        model: hub id (HF cache or :data:`KNOWN_MODELS`), local folder, or :class:`ModelDims`.
        stage: ``sft`` | ``reward`` | ``ppo`` | ``grpo``.
        preset: ``full`` | ``lora`` | ``qlora``.
        gpu_gb: GPU memory in GiB; batch sizes and lengths default to the GPU-size preset not above it.
        layout: PPO only: ``separate`` (policy, reference, reward and value models; with peft the reference is
            the policy with its adapter disabled) or ``shared`` (one base + policy / value / reward adapters;
            lora/qlora only). Defaults to ``shared`` with peft, ``separate`` for full fine-tuning.
        batch_size, grad_accum: per-device batch (pairs for ``reward``) and accumulation steps.
        seq_len: ``max_length`` (sft, reward) or the response length (ppo ``response_length``, grpo
            ``max_completion_length``).
        prompt_length: RL stages: prompt tokens (default 256).
        num_generations, generation_batch_size: GRPO (generation batch defaults to ``batch * grad_accum``).
        rollout_batch_size: PPO ``local_rollout_forward_batch_size`` (sequences generated at once).
        gradient_checkpointing: defaults to the GPU preset's choice.
        beta: GRPO KL coefficient; a full-fine-tuning reference copy is planned when it is not 0 (default 0.04).
        lora_r: LoRA rank (default ``LORA_DEFAULTS["r"]``).
        attention: ``sdpa`` (flash / memory-efficient kernels, default) or ``eager`` (default for Gemma-2, whose
            logit soft-capping SDPA does not support).
        fused_lm_head: whether the LM head loss is fused (TRL 1.16's default for SFT and GRPO).
        precision: ``bf16`` (rlhfkit's default on GPUs), ``mixed`` (fp32 master weights) or ``fp32`` (CPU).
        suggest: compute suggestions when the plan does not fit.
    """
    if stage not in TRAINERS:
        raise ConfigError(f"stage={stage!r} is not a stage; choose one of {list(TRAINERS)}")
    if preset not in METHODS:
        raise ConfigError(f"preset={preset!r} is not a method preset; choose one of {list(METHODS)}")
    if precision not in ("bf16", "mixed", "fp32"):
        raise ConfigError(f"precision={precision!r} is not supported; choose bf16, mixed or fp32")
    if not gpu_gb or gpu_gb <= 0:
        raise ConfigError(f"gpu={gpu_gb!r} must be the GPU memory in GB, e.g. --gpu 24")
    peft = preset != "full"
    if stage == "ppo":
        layout = layout or ("shared" if peft else "separate")
        if layout not in LAYOUTS:
            raise ConfigError(f"layout={layout!r} is not a PPO layout; choose one of {list(LAYOUTS)}")
        if layout == "shared" and not peft:
            raise ConfigError("layout='shared' needs LoRA adapters; use preset=lora or qlora, or layout=separate")
    elif layout is not None:
        raise ConfigError(f"layout={layout!r} applies to stage=ppo only; drop it for stage={stage}")
    dims = model_dims(model)
    defaults = gpu_preset(_preset_size(gpu_gb), stage)
    bs = int(batch_size or defaults["per_device_train_batch_size"])
    accum = int(grad_accum or defaults["gradient_accumulation_steps"])
    ckpt = bool(defaults["gradient_checkpointing"] if gradient_checkpointing is None else gradient_checkpointing)
    r = int(lora_r or LORA_DEFAULTS["r"])
    attention = attention or ("eager" if dims.model_type == "gemma2" else "sdpa")
    beta = GRPO_BETA if beta is None else float(beta)  # a KL leash: a reference copy is planned
    settings: dict[str, Any] = {
        "layout": layout, "batch_size": bs, "grad_accum": accum, "gradient_checkpointing": ckpt, "lora_r": r,
        "attention": attention, "fused_lm_head": fused_lm_head, "precision": precision,
    }  # fmt: skip
    notes: list[str] = []
    if stage in ("sft", "reward"):
        seq = int(seq_len or defaults["max_length"])
        length, settings["seq_len"] = seq, seq
    else:
        seq = int(seq_len or defaults["response_length" if stage == "ppo" else "max_completion_length"])
        prompt = int(prompt_length or DEFAULT_PROMPT_LENGTH)
        length = prompt + seq
        settings.update(seq_len=seq, prompt_length=prompt)
    if stage == "ppo":
        settings["rollout_batch_size"] = int(rollout_batch_size or defaults["local_rollout_forward_batch_size"])
    if stage == "grpo":
        n_gen = int(num_generations or defaults["num_generations"])
        gen_batch = int(generation_batch_size or bs * accum)
        if gen_batch % n_gen or gen_batch % bs:
            raise ConfigError(
                f"generation_batch_size={gen_batch} must be divisible by num_generations={n_gen} and by "
                f"per_device_train_batch_size={bs}; change one of them"
            )
        settings.update(num_generations=n_gen, generation_batch_size=gen_batch, beta=beta)
    if dims.max_position_embeddings and length > dims.max_position_embeddings:
        notes.append(f"{length} tokens exceed the model's max_position_embeddings={dims.max_position_embeddings}")

    # ---- model copies and trainable parameters
    wb = _dtype_bytes(precision)
    quant = preset == "qlora"
    master = 4 if precision in ("mixed", "fp32") else 2  # bytes of a fully trained parameter (and its grad)
    base = {h: weight_bytes(dims, quantized=quant, dtype_bytes=wb, head=h) for h in ("causal", "score")}
    full_trainable = {h: weight_bytes(dims, dtype_bytes=master, head=h) for h in ("causal", "score")}
    n_score = dims.n_params - dims.lm_head_params + dims.hidden_size
    lora = dims.lora_params(r)
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

    if stage == "sft":
        add_trainable("policy", "causal")
    elif stage == "reward":
        add_trainable("reward model", "score")
    elif stage == "grpo":
        add_trainable("policy", "causal")
        if beta == 0:
            notes.append("beta=0: no reference model")
        elif peft:
            notes.append(disabled_ref)
        else:
            add_frozen("reference", "causal")
        add_frozen("reward model", "score")
    elif layout == "separate":
        add_trainable("policy", "causal")
        if peft:
            notes.append(disabled_ref)
        else:
            add_frozen("reference", "causal")
        add_frozen("reward model", "score")
        add_trainable("value model", "score")
    else:  # ppo, shared base
        copies.append(("shared base" + (" (4-bit)" if quant else ""), base["causal"]))
        adapters = 3 * lora * 4 + 2 * dims.hidden_size * wb  # policy, value (trained), reward (frozen) + 2 heads
        trainable.extend([(lora, 4), (lora, 4), (dims.hidden_size, wb)])
        notes.append("one base: reference = adapters disabled; policy, value and reward are adapters on it")

    weights = sum(b for _, b in copies)
    gradients = sum(n * b for n, b in trainable)
    optimizer = 2 * gradients  # AdamW exp_avg + exp_avg_sq, in the parameter's dtype

    # ---- activations, logits, KV cache
    e = 4 if precision == "fp32" else 2
    forwards = 2 if stage == "ppo" else 1  # PPO backpropagates through the policy and the value model
    tokens = bs * length * (2 if stage == "reward" else 1)
    act_kwargs = {"act_bytes": e, "attention": attention, "lora_r": r if peft else None}
    act_full = forwards * activation_bytes(dims, tokens, length, checkpointing=False, **act_kwargs)
    act_ckpt = forwards * activation_bytes(dims, tokens, length, checkpointing=True, **act_kwargs)
    activations = act_ckpt if ckpt else act_full
    logits = 0 if stage == "reward" else logits_bytes(dims, tokens, fused=fused_lm_head, act_bytes=e)
    kv = 0
    if stage == "ppo":
        kv = kv_cache_bytes(dims, settings["rollout_batch_size"], length, e)
    elif stage == "grpo":
        kv = kv_cache_bytes(dims, settings["generation_batch_size"], length, e)
    if kv:
        notes.append("generation (KV cache) and training (activations + logits) do not overlap: peak = the larger")

    subtotal = weights + adapters + gradients + optimizer + max(activations + logits, kv)
    overhead = OVERHEAD_FIXED + int(OVERHEAD_FRACTION * subtotal)
    total = subtotal + overhead
    capacity = int(gpu_gb * GIB)
    breakdown = {
        "weights": weights, "adapters": adapters, "gradients": gradients, "optimizer": optimizer,
        "activations": activations, "logits": logits, "kv_cache": kv, "overhead": overhead,
    }  # fmt: skip
    result = Plan(
        model=dims.name or str(model), stage=stage, preset=preset, gpu_gb=gpu_gb, settings=settings,
        copies=copies, breakdown=breakdown, activations_full=act_full, activations_checkpointed=act_ckpt,
        total_bytes=total, capacity_bytes=capacity, verdict=_verdict(total, capacity), dims=dims, notes=notes,
    )  # fmt: skip
    if suggest and not result.fits:
        result.suggestions = _suggestions(result)
        if not result.suggestions:
            notes.append(
                f"no change the planner knows makes it fit in {gpu_gb:g} GB; use a larger GPU or a smaller model"
            )
    return result


# --------------------------------------------------------------------------------------------- suggestions
_SEQ_FIELD = {"sft": "max_length", "reward": "max_length", "ppo": "response_length", "grpo": "max_completion_length"}


def _describe(stage: str, overrides: dict[str, Any]) -> str:
    names = {
        "batch_size": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
        "seq_len": _SEQ_FIELD[stage], "rollout_batch_size": "local_rollout_forward_batch_size",
    }  # fmt: skip
    return ", ".join(f"{names.get(k, k)}={v}" for k, v in overrides.items() if v is not None)


def _halvings(value: int, floor: int) -> list[int]:
    out = []
    while value // 2 >= floor:
        value //= 2
        out.append(value)
    return out


def _candidates(p: Plan) -> list[list[dict[str, Any]]]:
    """Groups of alternative overrides, least disruptive first; from each group the first that fits is kept."""
    s, stage = p.settings, p.stage
    groups: list[list[dict[str, Any]]] = []
    if not s["gradient_checkpointing"]:
        groups.append([{"gradient_checkpointing": True}])
    bs, accum = s["batch_size"], s["grad_accum"]
    smaller = []
    for b in _halvings(bs, 1):
        o = {"batch_size": b, "grad_accum": accum * bs // b}
        if stage == "grpo" and s["generation_batch_size"] % b:
            continue
        smaller.append(o)
    groups.append(smaller)
    if stage == "grpo":
        n, g = s["num_generations"], s["generation_batch_size"]
        groups.append([{"generation_batch_size": x} for x in _halvings(g, 1) if x % n == 0 and x % bs == 0])
        fewer = [{"num_generations": m, "generation_batch_size": g * m // n} for m in _halvings(n, 2)]
        groups.append([o for o in fewer if o["generation_batch_size"] % bs == 0])
    if stage == "ppo":
        if s["layout"] == "separate" and p.preset != "full":
            groups.append([{"layout": "shared"}])
        groups.append([{"rollout_batch_size": x} for x in _halvings(s["rollout_batch_size"], 1)])
    methods = [m for m in ("lora", "qlora") if METHODS.index(m) > METHODS.index(p.preset)]
    groups.append([{"preset": m, **({"layout": None} if stage == "ppo" else {})} for m in methods])
    groups.append([{"seq_len": x} for x in _halvings(s["seq_len"], 64)])
    return groups


def _replan(p: Plan, overrides: dict[str, Any]) -> Plan:
    kwargs = {**p.settings, "preset": p.preset, **overrides}
    if p.stage == "ppo" and kwargs.get("preset") == "full":
        kwargs["layout"] = "separate"
    preset = kwargs.pop("preset")
    return plan(p.dims, p.stage, preset, p.gpu_gb, suggest=False, **kwargs)


def _suggestions(p: Plan) -> list[Suggestion]:
    """Single changes that fit when re-planned; when none does, one combination of them that does."""
    found = []
    groups = _candidates(p)
    for group in groups:
        for overrides in group:
            q = _replan(p, overrides)
            if q.fits:
                found.append(Suggestion(_describe(p.stage, overrides), overrides, q.total_bytes, q.verdict))
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
                return [Suggestion(_describe(p.stage, combined), combined, q.total_bytes, q.verdict)]
        combined.update(group[-1])
    return []


# ------------------------------------------------------------------------------------------ tables, configs
@dataclass
class FitRow:
    """One cell of the fit table: the first preset (in the order tried) that fits, or None."""

    model: str
    stage: str
    gpu_gb: int
    preset: str | None
    total_gib: float


def fit_table(
    models: list[str],
    stages: tuple[str, ...] = TRAINERS,
    gpus: tuple[int, ...] = GPU_SIZES,
    preset_for=None,
    **plan_kwargs: Any,
) -> list[FitRow]:
    """What fits where: for each model x stage x GPU, plan with the GPU-size preset's batch and lengths.

    ``preset_for(model, stage, gpu)`` returns the presets to try, most preferred first (default: full, lora,
    qlora -- the cell shows the least compressed method that fits). PPO uses its default layout (shared base
    with lora/qlora). ``plan_kwargs`` go to every :func:`plan` (e.g. ``gradient_checkpointing=True``).
    """
    rows = []
    for model in models:
        dims = model_dims(model)
        for stage in stages:
            for gpu in gpus:
                tried = preset_for(model, stage, gpu) if preset_for else METHODS
                chosen, total = None, 0.0
                for preset in tried:
                    p = plan(dims, stage, preset, gpu, suggest=False, **plan_kwargs)
                    total = p.total_bytes / GIB
                    if p.fits:
                        chosen = preset
                        break
                rows.append(FitRow(dims.name, stage, gpu, chosen, round(total, 1)))
    return rows


def fit_table_markdown(rows: list[FitRow]) -> str:
    """A markdown table: one line per model x stage, one column per GPU size; cells name the method that fits."""
    gpus = sorted({r.gpu_gb for r in rows})
    keys = list(dict.fromkeys((r.model, r.stage) for r in rows))
    cell = {(r.model, r.stage, r.gpu_gb): r for r in rows}
    stage_name = {"sft": "SFT", "reward": "reward", "ppo": "PPO (shared base)", "grpo": "GRPO"}
    lines = [
        "| model | stage | " + " | ".join(f"{g} GB" for g in gpus) + " |",
        "|---|---|" + "---|" * len(gpus),
    ]
    for model, stage in keys:
        cells = [cell[(model, stage, g)].preset or "—" for g in gpus]
        lines.append(f"| {model.split('/')[-1]} | {stage_name[stage]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# YAML keys (TRL / rlhfkit config fields) -> plan() arguments.
_CONFIG_KEYS = {
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "gradient_checkpointing": "gradient_checkpointing", "activation_checkpointing": "gradient_checkpointing",
    "max_prompt_length": "prompt_length",
    "num_generations": "num_generations", "generation_batch_size": "generation_batch_size",
    "local_rollout_forward_batch_size": "rollout_batch_size", "beta": "beta", "lora_r": "lora_r",
    "layout": "layout",
}  # fmt: skip


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {str(path)!r}: {e}".splitlines()[0]) from e
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of keys to values, got {type(cfg).__name__}")
    return cfg


def _plan_kwargs(stage: str, fields: dict[str, Any]) -> dict[str, Any]:
    """:func:`plan` arguments from a stage's config fields (TRL / rlhfkit names); absent fields keep the preset's."""
    kwargs = {arg: fields[key] for key, arg in _CONFIG_KEYS.items() if fields.get(key) is not None}
    if fields.get(_SEQ_FIELD[stage]) is not None:
        kwargs["seq_len"] = fields[_SEQ_FIELD[stage]]
    return kwargs


def check_config_fits(path: str | os.PathLike, model: str | os.PathLike | None = None) -> Plan:
    """Plan the run a ``configs/<model>/<stage>.yaml`` describes, on the GPU it names.

    The YAML needs ``model_name_or_path``, ``preset`` and ``gpu`` (GB); the stage is its ``stage`` key or the
    file name. TRL fields (``per_device_train_batch_size``, ``max_length``, ``response_length``,
    ``max_completion_length``, ...) override the GPU-size preset's values. ``plan.fits`` says whether it fits.
    ``model`` replaces ``model_name_or_path`` (plan a later stage on the hub model before ``runs/.../sft/model``
    exists: the SFT model has the same dimensions).
    """
    path = Path(path)
    cfg = _read_yaml(path)
    if model is not None:
        cfg["model_name_or_path"] = str(model)
    for key in ("model_name_or_path", "preset", "gpu"):
        if key not in cfg:
            raise ConfigError(f"{path}: field {key!r} is missing; add it (the planner needs model, preset and gpu)")
    stage = cfg.get("stage", path.stem)
    if stage not in TRAINERS:
        raise ConfigError(
            f"{path}: stage={stage!r} is unknown; name the file <stage>.yaml or set stage: {list(TRAINERS)}"
        )
    return plan(cfg["model_name_or_path"], stage, cfg["preset"], float(cfg["gpu"]), **_plan_kwargs(stage, cfg))


def check_pipeline_fits(path: str | os.PathLike, model: str | os.PathLike | None = None) -> dict[str, Plan]:
    """Plan every training stage of a pipeline config (``rlhfkit run FILE``) on the GPU its ``model`` section names.

    Returns ``{"sft": Plan, "reward": Plan, <rl.algorithm>: Plan}``: each stage with ``model.preset`` on
    ``model.gpu``, its section's fields (``sft:``, ``reward:``, ``ppo:`` / ``grpo:``) overriding the GPU-size
    preset's batch sizes and lengths, and PPO in ``rl.layout`` (default: shared with LoRA). Reads the YAML only
    (no torch, no TRL), so it does not validate the config: ``rlhfkit.pipeline.load_config`` does. ``model``
    replaces ``model.model_name_or_path``.
    """
    path = Path(path)
    cfg = _read_yaml(path)
    section = dict(cfg.get("model") or {})
    if model is not None:
        section["model_name_or_path"] = str(model)
    for key in ("model_name_or_path", "preset", "gpu"):
        if section.get(key) is None:
            raise ConfigError(
                f"{path}: model.{key} is missing; the planner needs the model name, preset and gpu in section model"
            )
    rl = cfg.get("rl") or {}
    algorithm = rl.get("algorithm", "grpo")
    if algorithm not in ("ppo", "grpo"):
        raise ConfigError(f"{path}: rl.algorithm={algorithm!r} must be 'ppo' or 'grpo'")
    dims = model_dims(section["model_name_or_path"])
    plans = {}
    for stage in ("sft", "reward", algorithm):
        kwargs = _plan_kwargs(stage, cfg.get(stage) or {})
        if stage == "ppo" and rl.get("layout") is not None:
            kwargs["layout"] = rl["layout"]
        plans[stage] = plan(dims, stage, section["preset"], float(section["gpu"]), **kwargs)
    return plans


def plan_config(path: str | os.PathLike, model: str | os.PathLike | None = None) -> dict[str, Plan]:
    """Plan a recipe config (``{stage: Plan}``, :func:`check_config_fits`) or a pipeline config (one plan per
    training stage, :func:`check_pipeline_fits`); a pipeline config is one with a ``model:`` section."""
    if isinstance(_read_yaml(Path(path)).get("model"), dict):
        return check_pipeline_fits(path, model)
    p = check_config_fits(path, model)
    return {p.stage: p}


def gib(n: int) -> float:
    return n / GIB


__all__ = [
    "KNOWN_MODELS", "ModelDims", "Plan", "Suggestion", "FitRow", "model_dims", "plan", "fit_table",
    "fit_table_markdown", "check_config_fits", "check_pipeline_fits", "plan_config", "weight_bytes",
    "activation_bytes", "logits_bytes", "kv_cache_bytes", "gib",
]  # fmt: skip
