"""What fits where: the fit table and config files (recipe and pipeline) planned on their GPU, from Python and
from `rlhfkit plan --config`."""

from __future__ import annotations

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.core.errors import ConfigError
from rlhfkit.planner import GIB, check_config_fits, check_pipeline_fits, fit_table, fit_table_markdown, plan


def test_fit_table_rows_and_markdown():
    rows = fit_table(["Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"], gpus=(8, 24))
    assert len(rows) == 2 * 4 * 2
    cell = {(r.model.split("/")[-1], r.trainer, r.gpu_gb): r.preset for r in rows}
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
    assert p.fits and p.trainer == "grpo" and p.settings["seq_len"] == 256 and p.settings["batch_size"] == 4
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
