"""The do-no-harm check (rlhfkit.rl.healthy): the paired verdict on hand-made scores, its settings refused at the door,
and the RL stage returning the starting policy when the check refuses the RL model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from rlhfkit.core.errors import ConfigError
from rlhfkit.monitors import MonitorConfig
from rlhfkit.rl import healthy
from rlhfkit.rl.healthy import apply_no_harm, check_prompts, no_harm_verdict


def test_the_verdict_is_the_paired_mean_difference_in_standard_errors():
    start = [0.0, 1.0, 2.0, 3.0]
    candidate = [0.5, 1.0, 2.5, 3.0]  # d = 0.5, 0, 0.5, 0: mean 0.25, sample std 0.2887, se 0.1443
    v = no_harm_verdict(candidate, start, margin=-2.0)
    assert v["mean_diff"] == pytest.approx(0.25) and v["se"] == pytest.approx(0.2887 / 2, abs=1e-4)
    assert v["z"] == pytest.approx(0.25 / (0.2887 / 2), abs=1e-3) and v["keep"] and v["n"] == 4
    assert not no_harm_verdict(candidate, start, margin=2.0)["keep"]  # 1.73 standard errors: not a measurable gain
    worse = no_harm_verdict([s - 0.5 for s in start], start, margin=-2.0)  # every answer worse: se 0, z -inf
    assert worse["z"] == -math.inf and not worse["keep"]
    assert no_harm_verdict(start, start, margin=-2.0)["keep"]  # identical: z 0 > -2
    with pytest.raises(ValueError):
        no_harm_verdict([1.0], [0.0], margin=0.0)


def test_settings_are_refused_at_the_door(tmp_path):
    with pytest.raises(ConfigError, match="no_harm_reward='/nowhere' is not a folder"):
        MonitorConfig(no_harm_reward="/nowhere")
    with pytest.raises(ConfigError, match="no_harm_margin=50"):
        MonitorConfig(no_harm_margin=50)
    with pytest.raises(ConfigError, match="no_harm_prompts=5 must be >= 30"):
        MonitorConfig(no_harm_prompts=5)
    assert MonitorConfig(no_harm_reward=str(tmp_path)).no_harm_reward == str(tmp_path)


class _Trainer:
    def __init__(self, out):
        self.args = SimpleNamespace(output_dir=str(out), seed=0, response_length=8)
        self.accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
        self.train_dataset = [{"prompt": f"Q{i}"} for i in range(40)]


def _models(tmp_path):
    start, out = tmp_path / "sft", tmp_path / "rl"
    start.mkdir()
    (start / "weights").write_text("sft")
    (out / "model").mkdir(parents=True)
    (out / "model" / "weights").write_text("rl")
    return start, out


@pytest.mark.parametrize("keep", [True, False])
def test_the_rl_stage_returns_the_starting_policy_when_the_check_refuses(tmp_path, monkeypatch, keep):
    start, out = _models(tmp_path)
    seen = {}

    def fake_check(model_dir, start_model, config, prompts, max_new_tokens, seed):
        seen.update(prompts=prompts, length=max_new_tokens)
        return {"keep": keep, "mean_diff": 0.1 if keep else -0.2, "se": 0.05, "z": 2.0 if keep else -4.0, "n": 30,
                "margin": -2.0}  # fmt: skip

    monkeypatch.setattr(healthy, "check_no_harm", fake_check)
    metrics = {"stop_step": 40, "returned_step": 30, "returned_reason": "kl_limit stopped training at step 40"}
    config = MonitorConfig(no_harm_reward=str(tmp_path), no_harm_prompts=30)
    model_dir = apply_no_harm(_Trainer(out), metrics, out / "model", start, config)
    assert seen == {"prompts": [f"Q{i}" for i in range(10, 40)], "length": 8}  # the last 30 training prompts
    assert (model_dir / "weights").read_text() == ("rl" if keep else "sft")
    assert metrics["no_harm"]["keep"] is keep and metrics["returned_step"] == (30 if keep else 0)
    assert "do-no-harm check" in metrics["returned_reason"]
    assert metrics["returned_reason"].endswith("kept." if keep else "returns the starting policy (step 0) instead.")


def test_no_check_without_a_held_out_reward_model(tmp_path):
    start, out = _models(tmp_path)
    metrics = {"stop_step": None, "returned_step": 60, "returned_reason": "no stop alert: the final weights"}
    assert apply_no_harm(_Trainer(out), metrics, out / "model", start, MonitorConfig()) == out / "model"
    assert metrics["no_harm"] is None and metrics["returned_step"] == 60


def test_check_prompts_decode_ppo_token_ids():
    tok = SimpleNamespace(decode=lambda ids, skip_special_tokens: "".join(map(str, ids)))
    trainer = SimpleNamespace(train_dataset=[{"input_ids": [1, 2]}, {"input_ids": [3]}], processing_class=tok)
    assert check_prompts(trainer, 5) == ["12", "3"]
