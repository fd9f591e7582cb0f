"""bench/gpu_check.py: what it plans is what `rlhfkit plan --config` plans, its data is as long as the planner
assumes, and `--tiny` runs every trainer on the CPU and writes the report a device run writes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlhfkit.core.arguments import read_yaml
from rlhfkit.planner.fit import check_config_fits

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("trainer", ["sft", "reward", "ppo", "grpo", "dpo"])
@pytest.mark.parametrize("model", ["Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-3B-Instruct"])
def test_the_check_plans_what_rlhfkit_plan_config_plans(gpu_check, model, trainer, fake_gpu):
    fake_gpu(bf16=True, memory_gb=80)  # the device's precision: bf16
    config = REPO / gpu_check.MODELS[model] / f"{trainer}.yaml"
    raw = read_yaml(config)
    layout = "shared" if trainer == "ppo" else None
    values = gpu_check.run_values(trainer, raw, tiny=False)
    dims = gpu_check.dims_of(model, tiny=False)
    ours = gpu_check.planned(dims, trainer, layout, raw["preset"], raw["gpu"], values, prompt_tokens=256)
    assert ours.total_bytes == check_config_fits(config, model=model).total_bytes


def test_run_data_is_as_long_as_the_config_allows(gpu_check, nano_model):
    tok = AutoTokenizer.from_pretrained(nano_model)
    gpu_check.check_words(nano_model)
    length = lambda text: len(tok(text).input_ids)  # noqa: E731
    values = {"max_length": 96}
    for row in gpu_check.run_data("sft", values, 256, rows=3):  # cut to max_length after EOS
        assert length(row["prompt"] + row["completion"]) == 96
    for row in gpu_check.run_data("reward", values, 256, rows=3):  # TRL drops pairs over max_length
        assert length(row["prompt"] + row["chosen"] + tok.eos_token) == 96
        assert length(row["prompt"] + row["rejected"] + tok.eos_token) == 96
    for row in gpu_check.run_data("dpo", values, 256, rows=3):
        assert length(row["prompt"] + row["chosen"]) == 96 and row["chosen"] != row["rejected"]
    assert {length(r["prompt"]) for r in gpu_check.run_data("ppo", values, 40, rows=3)} == {40}


@pytest.mark.slow  # every trainer twice and the gpu-marked tests: about 90 s on 2 cores
def test_tiny_check_runs_every_trainer_and_writes_the_report(gpu_check, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "bench/gpu_check.py", "--tiny", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "tiny" and report["device"]["name"] == "cpu"
    assert report["hardware"]["ok"] and report["hardware"]["precision_kwargs"]["bf16"] is False  # never bf16 on CPU
    assert report["reward_bf16_vs_fp32"]["ok"]
    tests = report["gpu_tests"]
    assert tests["passed"] == [] and tests["failed"] == [] and len(tests["skipped"]) == 4
    assert all("needs a CUDA GPU" in s["reason"] for s in tests["skipped"])
    for name, built in report["models"].items():
        assert built["n_params"] == built["planned_n_params"], name  # the planner counts the built model exactly
    runs = report["runs"]
    key = lambda r: (r["model"], r["trainer"], r["layout"], r["preset"])  # noqa: E731
    assert [key(r) for r in runs] == [key(c) for c in gpu_check.cases(has_bitsandbytes=True)]
    assert len(runs) == 14 and all(r["status"] == "ok" for r in runs), [r.get("error") for r in runs]
    for r in runs:
        assert len(r["step_seconds"]) == r["steps"] and r["seconds_per_step"] > 0
        assert r["plan"]["total"] > r["plan"]["formulas"] > 0
        assert r["memory"] == {"measured": False, "why": "not measured on the CPU"}
    for r in (r for r in runs if r["trainer"] == "ppo"):
        t = r["ppo"]  # 4 prompts x 16 tokens (fewer where a random policy sampled EOS)
        assert 0 < t["generated_tokens_per_update"] <= 64 and t["generation_s"] < t["rollout_s"]
    assert "## Memory and seconds per step" in (tmp_path / "gpu_check.md").read_text()
