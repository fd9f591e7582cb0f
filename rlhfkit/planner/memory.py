"""The planner's byte counts: weights, activations, logits and KV cache of one model copy, as pure functions of
:class:`~rlhfkit.planner.dims.ModelDims` (no torch).

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
* **Generation KV cache** (RL trainers): ``2*L*kv*d*(prompt + response)*batch*2`` bytes (bf16 cache). It is
  freed before the training forward, so an RL plan counts ``max(KV cache, activations + logits)``.
* **Overhead**: 1 GiB (CUDA context, cuBLAS workspaces, allocator slack) + 10% of everything else for
  fragmentation. Verdict: ``fits`` up to 90% of the GPU, ``tight`` up to 100%, else ``does not fit``.

Assumptions: every sequence is padded to the full length (the worst batch); the reward trainer forwards
chosen and rejected together (``2*b`` sequences); RL trainers use a reward model of the same size as the
policy; GRPO generates a whole generation batch (``b * gradient_accumulation_steps`` by default) at once.

What is not validated here: activations, KV cache and overhead are not measured on a GPU -- the CPU tests
check the saved-tensor count, not the CUDA allocator's peak (transient buffers, kernel workspaces and
fragmentation are only covered by the overhead term).
"""

from __future__ import annotations

import math

from rlhfkit.planner.dims import ModelDims

GIB = 2**30
FIT_FRACTION = 0.9  # "fits" below 90% of the GPU; "tight" up to 100%
OVERHEAD_FIXED = 1 * GIB  # CUDA context + cuBLAS workspace + allocator slack
OVERHEAD_FRACTION = 0.10  # fragmentation of the caching allocator
QUANT_BLOCK, QUANT_BLOCK2, QUANT_TENSOR_CONSTANTS = 64, 256, 16 * 4 + 256 * 4 + 4  # NF4 + double quantisation
FUSED_TOKENS, FUSED_VOCAB = 4096, 32768  # TRL's fused LM head tile


def gib(n: int) -> float:
    return n / GIB


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
