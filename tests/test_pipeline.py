"""The InstructGPT pipeline on the lab: config validation, manifest, skip/resume, --from, gate, kill-and-resume."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from rlhfkit.cli import main
from rlhfkit.errors import ConfigError
from rlhfkit.pipeline import GateFailed, load_config, run_pipeline

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def small(out: Path, **over) -> dict:
    """The demo config, shrunk to seconds."""
    cfg = json.loads(json.dumps(DEMO))
    cfg["output_dir"] = str(out)
    cfg["lab"].update(demonstrations=600, comparisons=2000, eval_comparisons=300, rl_prompts=64)
    cfg["sft"].update(max_steps=200, save_steps=100)
    cfg["reward"].update(max_steps=400, save_steps=100)
    cfg["grpo"].update(max_steps=4, logging_steps=2, save_steps=2)
    cfg["rl"]["eval_prompts"] = 32
    for key, value in over.items():
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    return cfg


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"sft": {"max_len": 3}}, r"sft: unknown SFTConfig field\(s\) \['max_len'\]"),
        ({"agreement": {"min_agrement": 0.7}}, r"unknown key\(s\) \['agreement.min_agrement'\]"),
        ({"rl": {"algorithm": "dqn"}}, "rl.algorithm='dqn' must be 'ppo' or 'grpo'"),
        ({"stages": {}}, r"unknown top-level key\(s\) \['stages'\]"),
        ({"model": {"preset": "qlora8"}}, "preset='qlora8' is not a method preset"),
        ({"monitor": {"kl_limt": 3}}, r"unknown key\(s\) \['monitor.kl_limt'\]"),
    ],
)
def test_bad_config_names_the_key_and_starts_nothing(tmp_path, patch, message):
    cfg = small(tmp_path / "run")
    for section, values in patch.items():
        cfg.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_bad_config_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    cfg = small(tmp_path / "run")
    cfg["reward"]["learning_rat"] = 1
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "learning_rat" in err[0]
    assert not (tmp_path / "run").exists()


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
def test_pipeline_runs_skips_and_redoes(tmp_path):
    out = tmp_path / "run"
    manifest = run_pipeline(load_config(small(out)))
    stages = manifest.data["stages"]
    assert all(s["status"] == "done" for s in stages.values()) and len(stages) == 6
    assert stages["sft"]["metrics"]["eval_loss"] < stages["sft"]["metrics"]["eval_loss_before"]
    assert stages["rm_eval"]["metrics"]["gate_passed"] is True
    assert {"gold_sft", "gold_rl", "proxy_rl"} <= set(stages["final_eval"]["metrics"])
    sft_files = _digest(out / "sft" / "model")

    said = []
    run_pipeline(load_config(small(out)), say=said.append)  # same config: everything skipped
    assert sum("skipping" in s for s in said) == 6

    with pytest.raises(ConfigError, match=r"stage 'reward' finished with a different config \(changed: reward"):
        run_pipeline(load_config(small(out, **{"reward.learning_rate": 5e-4})))

    manifest = run_pipeline(load_config(small(out, **{"reward.learning_rate": 5e-4})), from_stage="reward")
    assert manifest.stage("reward")["status"] == "done"
    assert _digest(out / "sft" / "model") == sft_files  # finished stages untouched

    from rlhfkit.report import write_pipeline_report

    paths = write_pipeline_report(load_config(small(out, **{"reward.learning_rate": 5e-4})), manifest)
    text = Path(paths["markdown"]).read_text()
    assert "gold reward of the RL policy" in text and Path(paths["json"]).exists()


@pytest.mark.slow
def test_gate_stops_before_rl(tmp_path):
    cfg = load_config(small(tmp_path / "run", **{"gate.min_accuracy": 0.99}))
    with pytest.raises(GateFailed, match="reward-model gate failed: .*gate.override: true"):
        run_pipeline(cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["rm_eval"]["status"] == "failed" and "rl" not in manifest["stages"]


@pytest.mark.slow
def test_sigkill_in_reward_stage_then_resume(tmp_path):
    """Kill the pipeline in the middle of the reward stage; the same command resumes and finishes."""
    cfg = small(tmp_path / "run")
    cfg["reward"].update(max_steps=400, save_steps=50)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "rlhfkit.cli", "run", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    reward_dir = tmp_path / "run" / "reward"
    deadline = time.time() + 300
    while time.time() < deadline and not list(reward_dir.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["sft"]["status"] == "done"
    assert manifest["stages"]["reward"]["status"] == "running"  # killed mid-stage
    assert not (reward_dir / "model").exists()  # nothing half-written as the final model
    sft_files = _digest(tmp_path / "run" / "sft" / "model")

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert _digest(tmp_path / "run" / "sft" / "model") == sft_files
    assert (reward_dir / "model" / "model.safetensors").exists()
