"""RLOO over TRL's RLOOTrainer with rlhfkit's reward-model scorer, presets and monitors (as GRPO)."""

import json

import pytest

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.monitors import read_metrics
from rlhfkit.rl.configs import grpo_config, rloo_config
from rlhfkit.rl.grpo_rloo import run_grpo, run_rloo
from tests.conftest import REPO


def _config(out, **kw):
    kw = {"max_steps": 2, "per_device_train_batch_size": 16, "num_generations": 4, "max_completion_length": 12,
          "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 10_000, "report_to": [], "seed": 0,
          "disable_tqdm": True, "gradient_checkpointing": False, **kw}  # fmt: skip
    return rloo_config(out, **kw)


def test_rloo_config_keeps_a_kl_leash_and_cpu_precision(tmp_path, cpu_only):
    cfg = rloo_config(tmp_path)
    assert cfg.beta > 0 and cfg.bf16 is False and cfg.use_cpu
    assert rloo_config(tmp_path, beta=0.2, preset="lora").beta == 0.2


@pytest.mark.parametrize("preset", ["full", "lora"])
def test_rloo_scores_with_the_reward_model_logs_gold_and_monitors(nano_model, tmp_path, preset):
    result = run_rloo(
        nano_model,
        lab.make_prompts(64),
        _config(tmp_path / "rloo", preset=preset),
        reward_model=nano_model,  # any sequence-classification checkpoint: its score head is new here
        reward_funcs=[lab.lab_gold],
        reward_weights=[1.0, 0.0],  # gold logged beside the proxy, never optimised
        reward_mean=0.5,
        reward_std=2.0,
        preset=preset,
    )
    logs = [row for row in result.log_history if "reward" in row]
    assert len(logs) == 2
    for row in logs:
        assert row["reward"] == pytest.approx(row["rewards/reward_model/mean"], abs=1e-5)
        assert "rewards/lab_gold/mean" in row and "kl" in row  # beta > 0: the reference is used
        assert read_metrics(row)["kl"] == pytest.approx(row["kl"] * row["completions/mean_length"])
    health = [json.loads(line) for line in (tmp_path / "rloo" / "health.jsonl").read_text().splitlines()]
    assert [h["step"] for h in health] == [1, 2]
    assert result.metrics["monitor_alerts"] == sum(len(h["alerts"]) for h in health)  # every alert of the timeline
    assert (result.model_dir / "model.safetensors").exists()
    assert (tmp_path / "rloo" / "adapter").is_dir() == (preset == "lora")


def test_rloo_errors_name_the_field(nano_model, tmp_path):
    with pytest.raises(ConfigError, match="run_rloo needs a reward"):
        run_rloo(nano_model, lab.make_prompts(8), _config(tmp_path))
    with pytest.raises(ConfigError, match=r"reward_weights=\[1.0\] has 1 weight\(s\) for 2"):
        run_rloo(nano_model, lab.make_prompts(8), _config(tmp_path), reward_model=nano_model,
                 reward_funcs=[lab.lab_gold], reward_weights=[1.0])  # fmt: skip


def test_rloo_recipe_runs_on_the_lab(nano_model, tmp_path):
    import importlib.util
    import sys

    from rlhfkit.core.arguments import parse_recipe
    from rlhfkit.monitors import MonitorConfig

    spec = importlib.util.spec_from_file_location("rloo_recipe", REPO / "recipes" / "rloo.py")
    recipe = importlib.util.module_from_spec(spec)
    sys.modules["rloo_recipe"] = recipe  # Trainer pickles the config into each checkpoint
    spec.loader.exec_module(recipe)
    types = (recipe.ModelArguments, recipe.DataArguments, recipe.RewardArguments, MonitorConfig, recipe.RLOOConfig)
    argv = ["--config", str(REPO / "configs" / "lab" / "rloo.yaml"), "--model_name_or_path",
            str(nano_model), "--reward_model_path", str(nano_model), "--output_dir", str(tmp_path / "out"),
            "--max_steps", "2", "--per_device_train_batch_size", "16", "--lab_samples", "64"]  # fmt: skip
    metrics = recipe.main(*parse_recipe("rloo", types, argv))
    health = [json.loads(line) for line in (tmp_path / "out" / "health.jsonl").read_text().splitlines()]
    assert metrics["monitor_alerts"] == sum(len(h["alerts"]) for h in health)  # the monitors of the lab config ran
    assert (tmp_path / "out" / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("run", [run_rloo, run_grpo], ids=["rloo", "grpo"])
def test_a_reference_apart_from_the_start_is_the_kl_leash(nano_model, tmp_path, run):
    """Iterative RLHF's round r starts from round r-1's policy with the SFT model as the reference: the first step's
    KL (before any update) is ~0 when the reference is the start, and large when it is another model."""
    from rlhfkit.lab import build_tiny_model

    other = build_tiny_model(tmp_path / "other", size="nano", seed=1)
    common = {"reward_model": nano_model, "reward_funcs": [lab.lab_gold], "reward_weights": [1.0, 0.0]}
    make = grpo_config if run is run_grpo else rloo_config
    kw = {"max_steps": 1, "per_device_train_batch_size": 16, "num_generations": 4, "max_completion_length": 12,
          "logging_steps": 1, "save_steps": 10_000, "report_to": [], "seed": 0, "disable_tqdm": True}  # fmt: skip
    same = run(nano_model, lab.make_prompts(16), make(tmp_path / "same", **kw), **common)
    apart = run(nano_model, lab.make_prompts(16), make(tmp_path / "apart", **kw), reference_model=other, **common)
    kl_same, kl_apart = (next(r["kl"] for r in x.log_history if "kl" in r) for x in (same, apart))
    assert kl_same == 0 and kl_apart > 0.01  # two random nano models: 0.03 nats per token apart
    config = json.loads((apart.model_dir / "config.json").read_text())
    assert config.get("_name_or_path", str(nano_model)) != str(other)  # the policy's own id is put back
    with pytest.raises(ConfigError, match=r"reference_model=.* with a LoRA preset"):
        run(nano_model, lab.make_prompts(8), make(tmp_path / "lora", preset="lora", **kw), reference_model=other,
            preset="lora", **common)  # fmt: skip


@pytest.mark.parametrize("run", [run_rloo, run_grpo], ids=["rloo", "grpo"])
def test_lora_trains_a_given_adapter_further_with_the_base_as_the_reference(nano_model, tmp_path, run):
    """LoRA rounds: round r trains round r-1's adapter further on the SFT model, whose (adapter-off) self stays the
    reference: the first step's KL is the adapter's distance from the base, not exactly 0 as with a fresh adapter (its
    B matrices are 0)."""
    make = grpo_config if run is run_grpo else rloo_config
    kw = {"max_steps": 1, "per_device_train_batch_size": 16, "num_generations": 4, "max_completion_length": 12,
          "logging_steps": 1, "save_steps": 10_000, "report_to": [], "seed": 0, "disable_tqdm": True,
          "learning_rate": 0.05, "preset": "lora"}  # fmt: skip
    common = {"reward_model": nano_model, "reward_funcs": [lab.lab_gold], "reward_weights": [1.0, 0.0]}
    common["preset"] = "lora"
    first = run(nano_model, lab.make_prompts(16), make(tmp_path / "r1", **kw), **common)  # a fresh adapter: KL 0
    adapter = tmp_path / "r1" / "adapter"
    assert next(r["kl"] for r in first.log_history if "kl" in r) == 0 and adapter.is_dir()
    second = run(nano_model, lab.make_prompts(16), make(tmp_path / "r2", **kw), start_adapter=adapter,
                 start_model=first.model_dir, **common)  # fmt: skip
    assert next(r["kl"] for r in second.log_history if "kl" in r) != 0  # round 1's adapter, measured to the base
    assert (tmp_path / "r2" / "adapter").is_dir() and (second.model_dir / "model.safetensors").exists()
    with pytest.raises(ConfigError, match=r"start_adapter=.* needs preset lora or qlora"):
        run(nano_model, lab.make_prompts(8), make(tmp_path / "full", **{**kw, "preset": "full"}),
            start_adapter=adapter, **{**common, "preset": "full"})  # fmt: skip
