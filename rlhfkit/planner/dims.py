"""A decoder's dimensions -- from a local ``config.json``, the Hugging Face cache, or :data:`KNOWN_MODELS` (an
offline table of real config values) -- and its exact parameter count. Never goes to the network."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError


@dataclass(frozen=True)
class ModelDims:
    """A decoder's dimensions, as ``config.json`` gives them, and its parameter count (formula:
    :mod:`rlhfkit.planner.memory`).

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
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "tie_word_embeddings": tie,
        "max_position_embeddings": max_pos,
        "head_dim": head_dim,
    }


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
