"""The byte formulas against measurements on tiny CPU models: weights, gradients and AdamW state (full, LoRA,
4-bit) and the tensors autograd saves in one forward."""

from __future__ import annotations

import pytest

from rlhfkit.planner import ModelDims, activation_bytes, plan

TINY = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2}


def _storage_bytes(tensors) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        if t is not None:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def _weight_tensors(model):
    """Every parameter and buffer, plus bitsandbytes 4-bit quant states (absmax, code books, nested state)."""
    out = [*model.parameters(), *model.buffers()]
    for p in model.parameters():
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            out += [qs.absmax, qs.code, getattr(qs, "offset", None)]
            if qs.nested:
                out += [qs.state2.absmax, qs.state2.code]
    return out


@pytest.mark.parametrize("preset", ["full", "lora", "qlora"])
def test_weights_gradients_and_adamw_state_match_measurements(nano_model, preset):
    import torch
    from peft import get_peft_model

    from rlhfkit.core.presets import method_preset
    from rlhfkit.models.loading import load_policy

    model, _ = load_policy(nano_model, preset)  # on CPU: fp32 compute dtype, NF4 4-bit base for qlora
    method = method_preset(preset)
    if method.lora is not None:
        model = get_peft_model(model, method.lora)  # what TRL's trainers do with peft_config
    weights = _storage_bytes(_weight_tensors(model))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, 100, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    grads = _storage_bytes(p.grad for p in trainable)
    state = _storage_bytes(t for s in optimizer.state.values() for k, t in s.items() if k != "step")

    p = plan(str(nano_model), "sft", preset, 24, precision="fp32")
    predicted = p.breakdown["weights"] + p.breakdown["adapters"]
    print(f"{preset}: weights {predicted} vs {weights}, grads {p.breakdown['gradients']} vs {grads}, "
          f"adam {p.breakdown['optimizer']} vs {state}")  # fmt: skip
    assert abs(predicted - weights) / weights < 0.02
    assert abs(p.breakdown["gradients"] - grads) / grads < 0.02
    assert abs(p.breakdown["optimizer"] - state) / state < 0.02


@pytest.mark.parametrize("lora", [False, True])
def test_saved_activations_match_formula(lora):
    """Bytes autograd saves in one forward (CPU, fp32, SDPA) vs activation_bytes(). This checks the count of
    saved tensors, not the CUDA allocator's peak. CPU dropout keeps no separate mask (CUDA's fused dropout keeps
    a 1-byte one, which GPU plans add), so LoRA is compared with ``lora_dropout=False`` accounting."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**TINY, num_attention_heads=4, num_key_value_heads=2, attn_implementation="sdpa")
    model = LlamaForCausalLM(config).train()
    if lora:
        model = get_peft_model(model, LoraConfig(r=8, lora_dropout=0.05, target_modules="all-linear")).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    b, s = 2, 96
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.randint(0, 512, (b, s)))
    measured = sum(saved.values())
    dims = ModelDims.from_config(config.to_dict())
    predicted = activation_bytes(
        dims, b * s, s, checkpointing=False, act_bytes=4, lora_r=8 if lora else None, lora_dropout=False
    )
    print(f"lora={lora}: activations predicted {predicted} vs saved {measured}")
    assert abs(predicted - measured) / measured < 0.10
