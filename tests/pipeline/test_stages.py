"""The rl stage's gate (DPO runs without the reward model, the others need it) and the final evaluation's sampling."""

import json
from importlib.resources import files

import pytest
import yaml

from rlhfkit.pipeline.config import load_config
from rlhfkit.pipeline.context import GateFailed, StageContext
from rlhfkit.pipeline.stages import check_gate, eval_sampling

DEMO = yaml.safe_load(files("rlhfkit").joinpath("demo.yaml").read_text())


def _ctx(tmp_path, gate_passed: bool, **over) -> StageContext:
    raw = json.loads(json.dumps(DEMO))
    raw["output_dir"] = str(tmp_path / "run")
    cfg = load_config(raw, over)
    rm_eval = {"metrics": {"gate_passed": gate_passed, "gate_summary": "accuracy 0.55 < 0.60"}}
    return StageContext(cfg=cfg, manifest=None, outputs={"rm_eval": rm_eval}, say=lambda _: None)


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "rloo", "best_of_n"])
def test_a_failed_gate_stops_the_algorithms_that_optimise_the_reward_model(tmp_path, algorithm):
    with pytest.raises(GateFailed, match=f"accuracy 0.55 < 0.60; set gate.override: true to run {algorithm} anyway"):
        check_gate(_ctx(tmp_path, False, **{"rl.algorithm": algorithm}))
    assert check_gate(_ctx(tmp_path, False, **{"rl.algorithm": algorithm, "gate.override": True})) == []
    assert check_gate(_ctx(tmp_path, True, **{"rl.algorithm": algorithm})) == []


def test_dpo_runs_despite_a_failed_gate_and_says_so(tmp_path):
    notes = check_gate(_ctx(tmp_path, False, **{"rl.algorithm": "dpo"}))
    assert len(notes) == 1 and "DPO does not optimise the reward model" in notes[0]
    assert check_gate(_ctx(tmp_path, True, **{"rl.algorithm": "dpo"})) == []


def test_final_evaluation_samples_as_the_rl_stage_unless_told(tmp_path):
    # every algorithm's length and temperature differ from every other's: reading another section's field fails
    lengths = {
        "ppo.response_length": 20,
        "grpo.max_completion_length": 21,
        "rloo.max_completion_length": 22,
        "best_of_n.max_completion_length": 23,
        "dpo.kl_max_new_tokens": 25,
        "dpo.max_length": 64,
    }
    temperatures = {
        "ppo.temperature": 0.9,
        "grpo.temperature": 0.8,
        "rloo.temperature": 0.7,
        "best_of_n.temperature": 0.6,
    }
    expected = {"ppo": (0.9, 20), "grpo": (0.8, 21), "rloo": (0.7, 22), "best_of_n": (0.6, 23), "dpo": (1.0, 25)}
    for algorithm, sampling in expected.items():
        cfg = _ctx(tmp_path, True, **lengths, **temperatures, **{"rl.algorithm": algorithm}).cfg
        assert eval_sampling(cfg) == sampling, algorithm  # DPO samples only for its KL, at temperature 1.0
    told = _ctx(tmp_path, True, **{"rl.algorithm": "dpo", "rl.eval_temperature": 0.7, "rl.max_new_tokens": 12})
    assert eval_sampling(told.cfg) == (0.7, 12)
