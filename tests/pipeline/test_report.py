"""``report.md`` opens with a three-line verdict; ``plots/rl.png`` is written from the rl stage's health timeline."""

import json
from importlib.resources import files

import yaml

from rlhfkit.core.io import write_json, write_text
from rlhfkit.pipeline.config import load_config
from rlhfkit.pipeline.manifest import Manifest
from rlhfkit.pipeline.report import stage_headlines, verdict, write_pipeline_report

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def _manifest(out, *, rl=None, final=None, rm=None) -> Manifest:
    manifest = Manifest(out)
    for stage, metrics in (("rm_eval", rm), ("rl", rl), ("final_eval", final)):
        if metrics is not None:
            manifest.update(stage, status="done", metrics=metrics)
    return manifest


STOPPED = {
    "algorithm": "ppo",
    "alerts": 2,
    "alert_messages": ["step 30: kl_caution (warn): ...", "step 50: kl_limit (stop): ..."],
    "stop_step": 50,
    "returned_step": 45,
    "averaged_steps": [35, 40, 45],
}
TIMELINE = [{"step": s, "reward": 0.5 + 0.01 * s, "kl": 0.1 * s, "length": 10.0, "alerts": []} for s in range(1, 51)]
TIMELINE[29]["alerts"] = [{"step": 30, "signal": "kl_caution", "action": "warn"}]
TIMELINE[49]["alerts"] = [{"step": 50, "signal": "kl_limit", "action": "stop"}]


def test_verdict_says_the_gain_the_stop_and_the_returned_model_and_a_weak_reward_model(tmp_path):
    final = {"gold_sft": 0.40, "gold_rl": 0.62, "gold_gain": 0.22, "gold_gain_sem": 0.004, "n_prompts": 4000}
    rm = {"accuracy": 0.65, "gate_passed": True, "gate_summary": "passed"}
    learned, monitors, reward_model = verdict(_manifest(tmp_path, rl=STOPPED, final=final, rm=rm), TIMELINE)
    assert learned.startswith("**Improved:** yes") and "0.400 (SFT) -> 0.620 (RL)" in learned
    assert "+0.220 ± 0.004" in learned and "4000 held-out prompts" in learned
    assert "stopped at step 50 by kl_limit" in monitors and "step 45 (average of steps 35, 40, 45)" in monitors
    assert "not the last step" in monitors and "kl_caution (step 30)" in monitors
    assert reward_model.startswith("**Reward model:** worry") and "accuracy 0.65 is below 0.7" in reward_model


def test_verdict_of_a_quiet_run_with_no_clear_gain(tmp_path):
    rl = {"algorithm": "grpo", "alerts": 0, "stop_step": None, "returned_step": 100}
    final = {"gold_sft": 0.40, "gold_rl": 0.405, "gold_gain": 0.005, "gold_gain_sem": 0.004, "proxy_rl": 1.0}
    lines = verdict(_manifest(tmp_path, rl=rl, final=final, rm={"accuracy": 0.8, "gate_passed": True}), [])
    assert lines[0].startswith("**Improved:** nothing clearly") and "within 2 standard errors" in lines[0]
    assert lines[1] == "**Monitors:** no alerts; the returned model is the last step (100)."
    assert lines[2] == "**Reward model:** fine: accuracy 0.80 on held-out pairs, gate passed."


def test_verdict_falls_back_to_the_proxy_and_reads_the_gate_warnings(tmp_path):
    write_json(tmp_path / "rm_eval" / "report.json", {"gate": {"warnings": ["rewards track length (0.55)"]}})
    manifest = _manifest(
        tmp_path, final={"proxy_sft": 0.1, "proxy_rl": 0.9}, rm={"accuracy": 0.9, "gate_passed": True}
    )
    lines = verdict(manifest, [], tmp_path)
    assert "reward-model score (no gold reward measured) 0.100 (SFT) -> 0.900 (RL)" in lines[0]
    assert lines[1] == "**Monitors:** no RL stage recorded."
    assert "worry: rewards track length (0.55)" in lines[2]


WINS = {"win_rate_gold": 0.655, "win_rate_gold_low": 0.62, "win_rate_gold_high": 0.688, "win_rate_gold_ties": 12}
WINS_RM = {
    "win_rate_rm": 0.8,
    "win_rate_rm_low": 0.75,
    "win_rate_rm_high": 0.84,
    "lc_win_rate_rm": 0.7,
    "lc_win_rate_rm_low": 0.6,
    "lc_win_rate_rm_high": 0.78,
}


def test_win_rates_show_with_their_intervals_in_the_verdict_and_the_headline(tmp_path):
    final = {"gold_sft": 0.40, "gold_rl": 0.62, "gold_gain": 0.22, "gold_gain_sem": 0.004, **WINS, **WINS_RM}
    manifest = _manifest(tmp_path, final=final)
    learned = verdict(manifest, [])[0]
    assert learned.endswith(
        " Win rate of RL's answers over SFT's by gold: 0.66 [0.62, 0.69] (ties half, 95% interval)."
    )
    headline = {label: value for stage, label, value in stage_headlines(manifest) if stage == "final_eval"}
    assert headline["win rate of RL over SFT by gold, ties half [95% interval]"] == "0.655 [0.620, 0.688]"
    assert headline["length-controlled win rate by the reward model"] == "0.700 [0.600, 0.780]"
    assert "length-controlled win rate by gold" not in headline  # not recorded: not shown
    proxy_only = verdict(_manifest(tmp_path / "real", final={"proxy_sft": 0.1, "proxy_rl": 0.9, **WINS_RM}), [])
    assert proxy_only[0].endswith("by the reward model: 0.80 [0.75, 0.84] (ties half, 95% interval).")


def test_report_opens_with_the_verdict_and_writes_the_rl_figure(tmp_path):
    cfg = json.loads(json.dumps(DEMO))
    cfg["output_dir"] = str(tmp_path)
    cfg = load_config(cfg)
    final = {"gold_sft": 0.40, "gold_rl": 0.62, "gold_gain": 0.22, "gold_gain_sem": 0.004, "n_prompts": 4000}
    manifest = _manifest(tmp_path, rl=STOPPED, final=final, rm={"accuracy": 0.8, "gate_passed": True})
    write_text(tmp_path / "rl" / "health.jsonl", "".join(json.dumps(r) + "\n" for r in TIMELINE))
    write_json(tmp_path / "rl" / "log_history.json", [{"step": s, "lab/gold": 0.4 + 0.004 * s} for s in range(1, 51)])
    paths = write_pipeline_report(cfg, manifest)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert lines[2].startswith("- **Improved:** yes") and lines[3].startswith("- **Monitors:** stopped at step 50")
    assert lines[4].startswith("- **Reward model:** fine") and lines[6] == "| stage | measure | value |"
    assert (tmp_path / "plots" / "rl.png").stat().st_size > 10_000
    assert "plots/rl.png" in (tmp_path / "report.md").read_text() and "RL run: reward, KL, length" in paths
