"""The memory planner: parameter formula, predicted vs measured weights / gradients / AdamW state / saved
activations on tiny CPU models (full, LoRA, 4-bit), plan() invariants, suggestions, CLI, configs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhfkit.cli import main
from rlhfkit.errors import ConfigError
from rlhfkit.planner import (
    GIB,
    KNOWN_MODELS,
    ModelDims,
    activation_bytes,
    check_config_fits,
    check_pipeline_fits,
    fit_table,
    fit_table_markdown,
    model_dims,
    plan,
)

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


# ------------------------------------------------------------------------------ predicted vs measured (CPU)
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

    from rlhfkit.models import load_policy
    from rlhfkit.presets import method_preset

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


# ------------------------------------------------------------------------------------------ plan invariants
MODEL = "Qwen/Qwen2.5-1.5B-Instruct"


@pytest.mark.parametrize("stage", ["sft", "reward", "ppo", "grpo"])
def test_plan_is_monotone_and_methods_are_ordered(stage):
    kw = {"num_generations": 2} if stage == "grpo" else {}
    base = plan(MODEL, stage, "lora", 24, batch_size=2, seq_len=256, **kw)
    assert plan(MODEL, stage, "lora", 24, batch_size=4, seq_len=256, **kw).total_bytes > base.total_bytes
    assert plan(MODEL, stage, "lora", 24, batch_size=2, seq_len=512, **kw).total_bytes > base.total_bytes
    on = plan(MODEL, stage, "lora", 24, batch_size=2, seq_len=256, gradient_checkpointing=True, **kw)
    off = plan(MODEL, stage, "lora", 24, batch_size=2, seq_len=256, gradient_checkpointing=False, **kw)
    assert on.total_bytes < off.total_bytes and on.activations_checkpointed < on.activations_full
    totals = [
        plan(MODEL, stage, m, 24, batch_size=2, seq_len=256, **kw).total_bytes for m in ("qlora", "lora", "full")
    ]
    assert totals == sorted(totals) and len(set(totals)) == 3


def test_impossible_plan_says_so():
    p = plan("meta-llama/Llama-3.1-8B-Instruct", "ppo", "qlora", 8)
    assert p.verdict == "does not fit" and not p.suggestions and "larger GPU" in p.notes[-1]


def test_stage_layouts_hold_the_right_model_copies():
    names = lambda p: [n for n, _ in p.copies]  # noqa: E731
    assert names(plan(MODEL, "ppo", "full", 80)) == ["policy", "reference", "reward model", "value model"]
    assert names(plan(MODEL, "ppo", "qlora", 24)) == ["shared base (4-bit)"]
    assert len(plan(MODEL, "ppo", "lora", 24, layout="separate").copies) == 3  # reference = adapter disabled
    assert names(plan(MODEL, "grpo", "full", 80)) == ["policy", "reference", "reward model"]
    assert names(plan(MODEL, "grpo", "full", 80, beta=0.0)) == ["policy", "reward model"]
    shared = plan(MODEL, "ppo", "lora", 24)
    assert shared.total_bytes < plan(MODEL, "ppo", "lora", 24, layout="separate").total_bytes
    with pytest.raises(ConfigError, match="layout='shared' needs LoRA"):
        plan(MODEL, "ppo", "full", 80, layout="shared")


@pytest.mark.parametrize(
    "model, stage, preset, gpu",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "sft", "full", 24),
        ("meta-llama/Llama-3.1-8B-Instruct", "ppo", "lora", 24),
        ("Qwen/Qwen2.5-7B-Instruct", "grpo", "lora", 24),
        ("Qwen/Qwen2.5-3B-Instruct", "reward", "lora", 8),
        ("Qwen/Qwen2.5-1.5B-Instruct", "sft", "full", 12),
    ],
)
def test_suggestions_fit_when_replanned(model, stage, preset, gpu):
    p = plan(model, stage, preset, gpu)
    assert not p.fits and p.suggestions
    for s in p.suggestions:
        kwargs = {**p.settings, "preset": preset, **s.overrides}
        if kwargs.get("preset") != "full" and stage == "ppo" and "layout" in s.overrides:
            kwargs["layout"] = s.overrides["layout"]
        again = plan(model, stage, kwargs.pop("preset"), gpu, **kwargs)
        assert again.fits and again.total_bytes == s.total_bytes, s.change


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


# -------------------------------------------------------------------------------------- CLI, tables, configs
def test_cli_plan_table_json_and_errors(capsys, nano_model):
    assert main(["plan", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--stage", "ppo", "--gpu", "8"]) == 0
    out = capsys.readouterr().out
    assert "shared base (4-bit)" in out or "weights" in out
    assert "verdict: fits" in out
    argv = ["plan", "--model", str(nano_model), "--stage", "grpo", "--preset", "lora", "--gpu", "8", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "fits" and data["breakdown"]["kv_cache"] > 0
    assert main(["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--stage", "sft", "--preset", "full"]) == 1
    assert "fix:" in capsys.readouterr().out
    assert main(["plan", "--model", "acme/nothing", "--stage", "sft"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "acme/nothing" in err[0] and "Qwen/Qwen2.5-0.5B-Instruct" in err[0]


def test_cli_plan_does_not_import_torch():
    code = (
        "import sys; from rlhfkit.cli import main; "
        "main(['plan', '--model', 'Qwen/Qwen2.5-7B-Instruct', '--stage', 'grpo', '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_fit_table_rows_and_markdown():
    rows = fit_table(["Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"], gpus=(8, 24))
    assert len(rows) == 2 * 4 * 2
    cell = {(r.model.split("/")[-1], r.stage, r.gpu_gb): r.preset for r in rows}
    assert cell[("Qwen2.5-0.5B-Instruct", "sft", 24)] == "full"
    assert cell[("Llama-3.1-8B-Instruct", "reward", 24)] == "qlora"
    md = fit_table_markdown(rows)
    assert md.splitlines()[0] == "| model | stage | 8 GB | 24 GB |" and "PPO (shared base)" in md
    qlora_only = fit_table(["Qwen/Qwen2.5-0.5B-Instruct"], ("sft",), (8,), preset_for=lambda m, s, g: ["qlora"])
    assert [r.preset for r in qlora_only] == ["qlora"]


def test_check_config_fits(tmp_path):
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(
        "model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct\npreset: qlora\ngpu: 12\n"
        "per_device_train_batch_size: 4\ngradient_accumulation_steps: 4\nmax_completion_length: 256\n"
        "num_generations: 8\nbeta: 0.04\n"
    )
    p = check_config_fits(cfg)
    assert p.fits and p.stage == "grpo" and p.settings["seq_len"] == 256 and p.settings["batch_size"] == 4
    cfg.write_text(cfg.read_text().replace("gpu: 12", "gpu: 8").replace("preset: qlora", "preset: full"))
    assert not check_config_fits(cfg).fits
    (tmp_path / "sft.yaml").write_text("model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct\npreset: qlora\n")
    with pytest.raises(ConfigError, match="'gpu' is missing"):
        check_config_fits(tmp_path / "sft.yaml")
    assert p.total_bytes < 12 * GIB


PIPELINE = """
output_dir: runs/x
model: {model_name_or_path: Qwen/Qwen2.5-7B-Instruct, preset: qlora, gpu: 24}
rl: {algorithm: ppo, layout: shared}
sft: {per_device_train_batch_size: 8, gradient_accumulation_steps: 2, max_length: 512}
reward: {per_device_train_batch_size: 2, activation_checkpointing: false}
ppo: {per_device_train_batch_size: 4, response_length: 128, local_rollout_forward_batch_size: 8}
grpo: {per_device_train_batch_size: 64}
"""


def test_check_pipeline_fits_plans_each_training_stage_with_its_section(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    plans = check_pipeline_fits(path)
    assert list(plans) == ["sft", "reward", "ppo"]  # the rl algorithm's section only: grpo's is not planned
    assert all((p.preset, p.gpu_gb, p.model) == ("qlora", 24, "Qwen/Qwen2.5-7B-Instruct") for p in plans.values())
    sft, reward, ppo = plans.values()
    assert (sft.settings["batch_size"], sft.settings["grad_accum"], sft.settings["seq_len"]) == (8, 2, 512)
    assert (
        sft.total_bytes == plan("Qwen/Qwen2.5-7B-Instruct", "sft", "qlora", 24, batch_size=8, seq_len=512).total_bytes
    )
    assert reward.settings["batch_size"] == 2 and reward.settings["gradient_checkpointing"] is False  # the alias
    assert reward.settings["grad_accum"] == 4 and reward.settings["seq_len"] == 1024  # the 24 GB preset's values
    assert ppo.settings == {**ppo.settings, "layout": "shared", "seq_len": 128, "rollout_batch_size": 8}
    assert not reward.fits and sft.fits and ppo.fits  # 4 x 1024-token pairs without checkpointing: too big
    # --model replaces the model (a later stage's runs/.../sft/model before it exists); a missing field is named
    assert check_pipeline_fits(path, model="Qwen/Qwen2.5-0.5B-Instruct")["reward"].fits
    path.write_text(PIPELINE.replace(" gpu: 24}", "}"))
    with pytest.raises(ConfigError, match="model.gpu is missing"):
        check_pipeline_fits(path)


def test_cli_plan_config(tmp_path, capsys):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    assert main(["plan", "--config", str(path)]) == 1  # the reward stage does not fit: exit 1, like a single plan
    out = capsys.readouterr().out
    assert out.count("verdict:") == 3 and "does not fit" in out
    assert main(["plan", "--config", str(path), "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--json"]) == 0
    assert [p["stage"] for p in json.loads(capsys.readouterr().out)] == ["sft", "reward", "ppo"]
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("model_name_or_path: runs/x/sft/model\npreset: qlora\ngpu: 12\nmax_completion_length: 128\n")
    assert main(["plan", "--config", str(recipe), "--model", "Qwen/Qwen2.5-1.5B-Instruct", "--json"]) == 0
    (grpo,) = json.loads(capsys.readouterr().out)
    assert grpo["stage"] == "grpo" and grpo["settings"]["seq_len"] == 128
    assert main(["plan", "--stage", "sft"]) == 2
    assert "--model" in capsys.readouterr().err
