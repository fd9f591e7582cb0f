"""Model dimensions: the parameter formula against published counts and transformers' own models, and where
dimensions come from (local folder, adapter folder, HF cache, offline table) with one-line errors."""

from __future__ import annotations

import json

import pytest

from rlhfkit.core.errors import ConfigError
from rlhfkit.planner import KNOWN_MODELS, ModelDims, model_dims

# Parameter counts published on the model cards / hub pages (billions).
PUBLISHED_B = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": 0.135,
    "HuggingFaceTB/SmolLM2-360M-Instruct": 0.362,
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": 1.71,
    "Qwen/Qwen2.5-0.5B-Instruct": 0.49,
    "Qwen/Qwen2.5-1.5B-Instruct": 1.54,
    "Qwen/Qwen2.5-3B-Instruct": 3.09,
    "Qwen/Qwen2.5-7B-Instruct": 7.61,
    "meta-llama/Llama-3.2-1B-Instruct": 1.23,
    "meta-llama/Llama-3.2-3B-Instruct": 3.21,
    "meta-llama/Llama-3.1-8B-Instruct": 8.03,
    "mistralai/Mistral-7B-Instruct-v0.3": 7.25,
    "google/gemma-2-2b-it": 2.61,
    "microsoft/Phi-3-mini-4k-instruct": 3.82,
}


def test_param_formula_reproduces_published_counts():
    assert set(PUBLISHED_B) == set(KNOWN_MODELS)
    for name, billions in PUBLISHED_B.items():
        n = model_dims(name).n_params
        assert abs(n / 1e9 - billions) / billions < 0.02, (name, n)


TINY = {"vocab_size": 512, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2}


@pytest.mark.parametrize(
    "cls_name, extra",
    [
        ("LlamaConfig", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False}),
        ("LlamaConfig", {"num_attention_heads": 4, "tie_word_embeddings": True, "attention_bias": True}),
        ("Qwen2Config", {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}),
        ("Qwen3Config", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64}),
        ("MistralConfig", {"num_attention_heads": 4, "num_key_value_heads": 1}),
        ("Phi3Config", {"num_attention_heads": 4, "num_key_value_heads": 4, "pad_token_id": 0}),
        ("Gemma2Config", {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 48}),
    ],
)
def test_param_formula_is_exact_for_transformers_models(cls_name, extra):
    import torch
    import transformers

    config = getattr(transformers, cls_name)(**TINY, **extra)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    dims = ModelDims.from_config(config.to_dict(), cls_name)
    assert dims.n_params == sum(p.numel() for p in model.parameters())


def test_model_sources_and_errors(tmp_path, nano_model):
    local = model_dims(str(nano_model))
    assert local.source == "local" and local.hidden_size == 64
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(nano_model)}))
    assert model_dims(str(adapter)).n_params == local.n_params
    assert model_dims("qwen/qwen2.5-0.5b").name == "Qwen/Qwen2.5-0.5B-Instruct"  # base id -> same dims
    with pytest.raises(ConfigError, match="give a local model folder"):
        model_dims("acme/unknown-model-7b")
    moe = tmp_path / "moe"
    moe.mkdir()
    (moe / "config.json").write_text(json.dumps({**KNOWN_MODELS["Qwen/Qwen2.5-0.5B-Instruct"], "num_experts": 8}))
    with pytest.raises(ConfigError, match="mixture-of-experts"):
        model_dims(str(moe))


def test_hf_cache_is_read_offline(tmp_path, monkeypatch):
    snap = tmp_path / "models--acme--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(KNOWN_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]))
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    dims = model_dims("acme/tiny")
    assert dims.source == "cache" and dims.n_params == model_dims("HuggingFaceTB/SmolLM2-135M-Instruct").n_params
