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
from rlhfkit.core.errors import ConfigError
from rlhfkit.pipeline.config import load_config
from rlhfkit.pipeline.context import GateFailed, StageContext
from rlhfkit.pipeline.runner import run_pipeline
from rlhfkit.pipeline.stages import rl_prompts
from rlhfkit.rl.policy_eval import paired_gain
from rlhfkit.rl.winrate import outcomes, win_rate

REPO = Path(__file__).resolve().parents[2]
DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def small(out: Path, **over) -> dict:
    """The demo config, shrunk to seconds."""
    cfg = json.loads(json.dumps(DEMO))
    cfg["output_dir"] = str(out)
    cfg["lab"].update(demonstrations=600, comparisons=2000, eval_comparisons=300, rl_prompts=64)
    cfg["sft"].update(max_steps=200, save_steps=100)
    cfg["reward"].update(max_steps=400, save_steps=100)
    cfg["ppo"].update(total_episodes=128, save_steps=1)  # 2 updates of 64 prompts
    cfg["grpo"].update(max_steps=4, logging_steps=2, save_steps=2)
    cfg["rl"]["eval_prompts"] = 32
    for key, value in over.items():
        section, leaf = key.split(".")
        cfg[section][leaf] = value
    return cfg


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"sft": {"max_len": 3}}, r"unknown SFTConfig field\(s\) \['sft.max_len'\]"),
        ({"agreement": {"min_agrement": 0.7}}, r"unknown key\(s\) \['agreement.min_agrement'\]"),
        ({"rl": {"algorithm": "dqn"}}, "rl.algorithm='dqn' must be one of ppo, grpo, rloo, dpo, best_of_n"),
        ({"stages": {}}, r"unknown key\(s\) \['stages'\]; valid top-level keys"),
        ({"model": {"preset": "qlora8"}}, "preset='qlora8' is not a method preset"),
        ({"monitor": {"kl_limt": 3}}, r"unknown key\(s\) \['monitor.kl_limt'\]"),
        ({"data": {"max_prompts": "lots"}}, r"data.max_prompts='lots' is not a whole number"),
        ({"sft": {"learning_rate": "fast"}}, r"sft.learning_rate='fast' is not a number"),
    ],
)
def test_bad_config_names_the_key_and_starts_nothing(tmp_path, patch, message):
    cfg = small(tmp_path / "run")
    for section, values in patch.items():
        cfg.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)
    assert not (tmp_path / "run").exists()


def test_yaml_numbers_written_as_strings_are_read_as_numbers(tmp_path):
    """PyYAML reads 1e-4 and 8e3 as strings (YAML 1.1); every section converts them by field type."""
    text = yaml.safe_dump(small(tmp_path / "run")).replace("learning_rate: 0.001", "learning_rate: 1e-3")
    raw = yaml.safe_load(text)
    assert raw["reward"]["learning_rate"] == "1e-3"  # what PyYAML gives
    raw["data"] = {"max_prompts": "8e3", "eval_fraction": "5e-2"}
    raw["monitor"] = {"kl_limit": "1.5e-1"}
    cfg = load_config(raw)
    assert cfg.trainer_config("reward").learning_rate == 1e-3
    assert (cfg.data.max_prompts, cfg.data.eval_fraction, cfg.trl["monitor"]["kl_limit"]) == (8000, 0.05, 0.15)


@pytest.mark.parametrize(
    "items, message", [(["sft=5"], "section 'sft' must be a mapping"), (["sft.x=[1"], "not valid YAML")]
)
def test_bad_overrides_are_one_line_errors(tmp_path, items, message):
    from rlhfkit.pipeline.config import parse_overrides

    with pytest.raises(ConfigError, match=message):
        load_config(small(tmp_path / "run"), parse_overrides(items))


def test_an_interrupted_stage_with_another_config_starts_over(tmp_path):
    """Checkpoints of an interrupted stage are resumed only under the same config; otherwise the stage starts over."""
    from rlhfkit.pipeline.manifest import Manifest

    cfg = tiny(tmp_path / "run")
    stale = tmp_path / "run" / "sft" / "checkpoint-999"
    stale.mkdir(parents=True)
    Manifest(tmp_path / "run").start("sft", {"sft": {"max_steps": 1}}, "another-config-hash")  # killed mid-stage
    said = []
    manifest = run_pipeline(load_config(cfg), until="sft", say=said.append)
    notice = next(m for m in said if "config changed since the interrupted run" in m)
    assert "sft.max_steps" in notice and notice.endswith("starting over")
    assert manifest.stage("sft")["status"] == "done" and not stale.exists()


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
    final = stages["final_eval"]["metrics"]
    assert {"gold_sft", "gold_rl", "proxy_rl", "gold_gain", "gold_gain_sem"} <= set(final)
    rows = [json.loads(line) for line in (out / "final_eval" / "samples.jsonl").read_text().splitlines()]
    golds = [(row["gold_sft"], row["gold_rl"]) for row in rows]  # the gain is paired over these per-prompt values
    assert (final["gold_gain"], final["gold_gain_sem"]) == pytest.approx(paired_gain(*zip(*golds)))
    same = [row["rl"] == row["sft"] for row in rows]  # the win rate is paired too: the same answer is a tie
    wins = win_rate([g[1] for g in golds], [g[0] for g in golds], same)
    assert (final["win_rate_gold"], final["win_rate_gold_low"], final["win_rate_gold_high"]) == pytest.approx(
        (wins.rate, wins.low, wins.high)
    )
    by_rm = outcomes([row["proxy_rl"] for row in rows], [row["proxy_sft"] for row in rows], same)
    assert final["win_rate_rm"] == pytest.approx(by_rm.mean()) and "win_rate_rm_high" in final
    sft_files = _digest(out / "sft" / "model")

    said = []
    run_pipeline(load_config(small(out)), say=said.append)  # same config: everything skipped
    assert sum("skipping" in s for s in said) == 6

    with pytest.raises(ConfigError, match=r"stage 'reward' finished with a different config \(changed: reward"):
        run_pipeline(load_config(small(out, **{"reward.learning_rate": 5e-4})))

    manifest = run_pipeline(load_config(small(out, **{"reward.learning_rate": 5e-4})), from_stage="reward")
    assert manifest.stage("reward")["status"] == "done"
    assert _digest(out / "sft" / "model") == sft_files  # finished stages untouched

    from rlhfkit.pipeline.report import write_pipeline_report

    paths = write_pipeline_report(load_config(small(out, **{"reward.learning_rate": 5e-4})), manifest)
    text = Path(paths["markdown"]).read_text()
    assert "gold reward of the RL policy" in text and Path(paths["json"]).exists()
    rl_log = json.loads((out / "rl" / "log_history.json").read_text())
    assert [r["step"] for r in rl_log if "objective/kl" in r] == [1, 2]  # PPO (the demo's algorithm), every update
    assert all("lab/gold" in r for r in rl_log if "objective/kl" in r)  # gold logged beside the proxy
    assert not list(out.glob("*/checkpoint-*"))  # finished stages keep their model, not their checkpoints

    # switch the RL algorithm: only rl and final_eval are redone, with GRPO
    grpo = small(out, **{"reward.learning_rate": 5e-4, "rl.algorithm": "grpo"})
    with pytest.raises(ConfigError, match=r"stage 'rl' finished with a different config \(changed: .*rl\.algorithm"):
        run_pipeline(load_config(grpo))
    manifest = run_pipeline(load_config(grpo), from_stage="rl")
    # the final evaluation's length is not part of the RL stage: changing it redoes only final_eval
    longer = small(out, **{"reward.learning_rate": 5e-4, "rl.algorithm": "grpo", "rl.max_new_tokens": 12})
    with pytest.raises(ConfigError, match=r"stage 'final_eval' finished with a different config \(changed: rl.max"):
        run_pipeline(load_config(longer))
    manifest = run_pipeline(load_config(longer), from_stage="final_eval")
    assert manifest.stage("final_eval")["metrics"]["max_new_tokens"] == 12
    assert _digest(out / "sft" / "model") == sft_files
    assert any("kl" in r for r in json.loads((out / "rl" / "log_history.json").read_text()))
    assert manifest.stage("final_eval")["metrics"]["temperature"] == 1.0


@pytest.mark.slow
def test_pipeline_with_a_reward_ensemble(tmp_path):
    out = tmp_path / "run"
    cfg = small(out, **{"reward.ensemble_size": 2, "reward.max_steps": 150, "rl.reward_aggregation": "mean_minus_std"})
    manifest = run_pipeline(load_config(cfg))
    rm_eval = manifest.stage("rm_eval")["metrics"]
    assert len(rm_eval["member_accuracy"]) == 2 and 0 < rm_eval["ensemble_split_pairs"] < 1
    assert {"member_0/eval_accuracy", "member_1/eval_accuracy"} <= set(manifest.stage("reward")["metrics"])
    assert (out / "rm_eval" / "member-1" / "report.json").exists() and (out / "rm_eval" / "ensemble.json").exists()
    rl_log = json.loads((out / "rl" / "log_history.json").read_text())
    assert all(r["rewards/ensemble_std/mean"] > 0 for r in rl_log if "objective/kl" in r)
    rl = manifest.stage("rl")["metrics"]
    assert rl["returned_step"] == 2 and rl["returned_reason"] == "no stop alert: the final weights"
    assert "proxy_rl" in manifest.stage("final_eval")["metrics"]
    assert not list(out.glob("reward/*/checkpoint-*"))  # members keep their model, not their checkpoints


def test_both_rl_sections_are_validated(tmp_path):
    cfg = small(tmp_path / "run")
    cfg["grpo"]["bta"] = 0.1  # the demo runs ppo; a typo in the grpo section is still reported
    with pytest.raises(ConfigError, match=r"unknown GRPOConfig field\(s\) \['grpo.bta'\]"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="rl.layout='shard' must be"):
        load_config(small(tmp_path / "run", **{"rl.layout": "shard"}))


@pytest.mark.slow
def test_gate_stops_before_rl(tmp_path):
    cfg = load_config(small(tmp_path / "run", **{"gate.min_accuracy": 0.99}))
    with pytest.raises(GateFailed, match="reward-model gate failed: .*gate.override: true"):
        run_pipeline(cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["rm_eval"]["metrics"]["gate_passed"] is False  # rm_eval judges, rl refuses to start
    assert manifest["stages"]["rl"]["status"] == "failed" and not (tmp_path / "run" / "rl" / "model").exists()


def run_and_kill(cfg: dict, tmp_path: Path, stage_dir: Path, checkpoint_glob: str):
    """Start `rlhfkit run` on ``cfg``, SIGKILL it once ``stage_dir`` holds a checkpoint; return a rerun function."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "rlhfkit.cli", "run", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "killed_run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 1800  # generous: a loaded machine can be 10x slower than CI
    while proc.poll() is None and time.time() < deadline and not list(stage_dir.glob(checkpoint_glob)):
        time.sleep(0.1)
    exited = proc.poll()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if exited is not None:
        pytest.fail(f"the run ended (exit {exited}) before a checkpoint appeared: {log.read_text()[-2000:]}")
    if not list(stage_dir.glob(checkpoint_glob)):
        pytest.fail(f"no {checkpoint_glob} in {stage_dir} after 1800 s; the run was killed before it got there")

    def rerun() -> subprocess.CompletedProcess:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    return rerun


@pytest.mark.slow
def test_sigkill_in_reward_stage_then_resume(tmp_path):
    """Kill the pipeline in the middle of the reward stage; the same command resumes and finishes."""
    cfg = small(tmp_path / "run")
    cfg["reward"].update(max_steps=400, save_steps=50)
    reward_dir = tmp_path / "run" / "reward"
    rerun = run_and_kill(cfg, tmp_path, reward_dir, "checkpoint-*/trainer_state.json")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["sft"]["status"] == "done"
    assert manifest["stages"]["reward"]["status"] == "running"  # killed mid-stage
    assert not (reward_dir / "model").exists()  # nothing half-written as the final model
    sft_files = _digest(tmp_path / "run" / "sft" / "model")

    done = rerun()
    assert "resuming" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert _digest(tmp_path / "run" / "sft" / "model") == sft_files
    assert (reward_dir / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_sigkill_in_rl_stage_then_resume_from_its_checkpoint(tmp_path):
    """Kill the pipeline in the middle of PPO; the same command resumes RL from its last checkpoint and finishes."""
    cfg = small(tmp_path / "run")
    cfg["ppo"].update(total_episodes=64 * 8, save_steps=2)  # 8 updates, a checkpoint every 2
    rl_dir = tmp_path / "run" / "rl"
    rerun = run_and_kill(cfg, tmp_path, rl_dir, "checkpoint-*/ppo_state.json")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in ("sft", "preferences", "reward", "rm_eval")] == ["done"] * 4
    assert manifest["stages"]["rl"]["status"] == "running" and not (rl_dir / "model").exists()
    killed_at = max(int(p.name.split("-")[1]) for p in rl_dir.glob("checkpoint-*"))
    assert killed_at < 8
    before = {s: _digest(tmp_path / "run" / s / "model") for s in ("sft", "reward")}

    done = rerun()
    assert "[rl] resuming" in done.stdout and "[reward] done earlier, skipping" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert {s: _digest(tmp_path / "run" / s / "model") for s in ("sft", "reward")} == before
    steps = [r["step"] for r in json.loads((rl_dir / "log_history.json").read_text()) if "objective/kl" in r]
    assert steps == list(range(1, 9))  # the resumed run continued the killed one: each update once, none redone
    assert (rl_dir / "model" / "model.safetensors").exists()


def tiny(out: Path) -> dict:
    """The demo config shrunk to a smoke run (a weak reward model: the gate is overridden)."""
    cfg = small(out)
    cfg["lab"].update(demonstrations=200, comparisons=300, eval_comparisons=100, rl_prompts=64)
    cfg["sft"].update(max_steps=10, save_steps=5)
    cfg["reward"].update(max_steps=10, save_steps=5)
    cfg["gate"]["override"] = True
    cfg["ppo"].update(total_episodes=64, per_device_train_batch_size=8, gradient_accumulation_steps=4)
    cfg["rl"]["eval_prompts"] = 16
    return cfg


@pytest.mark.slow
def test_instructgpt_recipe_runs_the_pipeline(tmp_path, monkeypatch):
    import runpy

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path / "run")))
    script = str(REPO / "recipes" / "instructgpt.py")
    monkeypatch.setattr(sys, "argv", [script, "--config", str(path), "--set", "rl.eval_prompts=8"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(script, run_name="__main__")
    assert done.value.code == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in manifest["stages"]] == ["done"] * 6
    assert manifest["stages"]["final_eval"]["metrics"]["n_prompts"] == 8  # --set reached the config
    assert (tmp_path / "run" / "report.md").exists() and (tmp_path / "run" / "plots" / "rl.png").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_pipeline_under_torchrun_two_processes(tmp_path):
    """The recipe on 2 CPU processes (gloo): training stages run DDP, the rest on rank 0; one manifest, one report."""
    import socket

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny(tmp_path / "run")))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", port, str(REPO / "recipes" / "instructgpt.py"), "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-6000:]
    assert done.stdout.count("rlhfkit run summary") == 1  # the summary and progress come from rank 0 only
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [manifest["stages"][s]["status"] for s in manifest["stages"]] == ["done"] * 6
    log = json.loads((tmp_path / "run" / "rl" / "log_history.json").read_text())
    assert [r["episode"] for r in log if "episode" in r] == [64]  # one update of 2 x 32 prompts: both ranks sampled
    assert not [p for p in (tmp_path / "run").rglob(".*.tmp")]  # nothing half-written


@pytest.mark.slow
def test_pipeline_on_files_a_dataset_folder_and_chat_prompts(tmp_path, hh_file):
    """Real-data sources, offline: SFT chat rows from a file, HH-RLHF pairs from a dataset folder (loaded like a hub
    id), chat prompts from a file with rl.eval_prompts held out; the final evaluation renders the chat template."""
    import gzip

    from rlhfkit import lab

    data = tmp_path / "data"
    (data / "hh").mkdir(parents=True)
    with gzip.open(hh_file, "rt") as f:  # short dialogues: the nano tokenizer spends ~1 token per 2 characters
        short = [line for line in f if len(json.loads(line)["chosen"]) < 250][:120]
    assert len(short) == 120
    (data / "hh" / "train.jsonl").write_text("".join(short))
    demos = lab.demonstrations(200, seed=0)
    sft_rows = [
        {"messages": [{"role": "user", "content": d["prompt"]}, {"role": "assistant", "content": d["completion"]}]}
        for d in demos
    ]
    (data / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    unique = list(dict.fromkeys(lab.make_prompts(400, seed=1)))[:40]  # the lab's prompt space repeats itself
    prompts = [{"prompt": [{"role": "user", "content": p}]} for p in unique]
    (data / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))

    cfg = tiny(tmp_path / "run")
    cfg["data"] = {"sft": str(data / "sft.jsonl"), "preferences": str(data / "hh"), "preference_format": "hh",
                   "prompts": str(data / "prompts.jsonl"), "max_prompts": 16, "eval_fraction": 0.1}  # fmt: skip
    cfg["agreement"]["enabled"] = False
    cfg["reward"].update(max_length=256, per_device_train_batch_size=8)
    cfg["ppo"].update(total_episodes=16, per_device_train_batch_size=4, gradient_accumulation_steps=4)
    cfg["rl"].update(eval_prompts=8, max_new_tokens=8)
    manifest = run_pipeline(load_config(cfg)).data["stages"]
    assert [s["status"] for s in manifest.values()] == ["done"] * 6
    prefs = manifest["preferences"]["metrics"]
    assert (prefs["n_pairs"], prefs["n_held_out"]) == (108, 12)  # 120 HH rows, eval_fraction 0.1
    final = manifest["final_eval"]["metrics"]
    assert final["n_prompts"] == 8 and "gold_rl" not in final and {"proxy_sft", "proxy_rl"} <= set(final)
    samples = (tmp_path / "run" / "final_eval" / "samples.jsonl").read_text().splitlines()
    held_out = [json.loads(line)["prompt"] for line in samples]
    ctx = StageContext(cfg=load_config(cfg), manifest=None, outputs={}, say=print)
    train_prompts, eval_prompts = rl_prompts(ctx)
    assert held_out == eval_prompts and len(train_prompts) == 16  # max_prompts
    assert not {json.dumps(p) for p in held_out} & {
        json.dumps(p) for p in train_prompts
    }  # evaluated on unseen prompts
    rl_log = json.loads((tmp_path / "run" / "rl" / "log_history.json").read_text())
    assert [r["episode"] for r in rl_log if "episode" in r] == [16]
