"""The benchmarks run: each at tiny sizes, so that a change that breaks one (or the equality it asserts) fails here."""

import json
import runpy
import sys

import pytest

from tests.conftest import REPO


def test_sample_throughput_runs_and_finds_the_greedy_responses_identical(nano_model, monkeypatch, capsys):
    argv = ["sample_throughput.py", "--model", str(nano_model), "--prompts", "6", "--k", "2", "--max-new-tokens", "5"]
    monkeypatch.setattr(sys, "argv", argv + ["--batch-size", "4", "--repeats", "1"])
    runpy.run_path(str(REPO / "bench" / "sample_throughput.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "identical greedy responses: 12 of 12" in out and "speed-up, batched / loop:" in out


@pytest.mark.slow
def test_rounds_bench_runs_one_round_and_three_at_the_same_label_budget(tmp_path, monkeypatch, capsys):
    """~40 s: bench/rounds.py at smoke sizes writes rounds.json with the documented keys, equal budgets."""
    argv = ["rounds.py", "--out", str(tmp_path), "--seeds", "0", "--sft-steps", "10", "--rm-steps", "10"]
    argv += ["--ppo-updates", "3", "--dpo-steps", "3", "--prompts", "36", "--k", "4", "--eval-prompts", "16"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "bench" / "rounds.py"), run_name="__main__")
    runs = json.loads((tmp_path / "rounds.json").read_text())
    keys = {"algorithm", "seed", "rounds", "labels_total", "gold_sft", "gold_policy", "gold_policy_se"}
    assert all(keys | {"win_rate_vs_sft", "rm_accuracy_on_final_policy"} <= set(r) for r in runs)
    assert [(r["algorithm"], r["rounds"]) for r in runs] == [("ppo", 1), ("ppo", 3), ("dpo", 1), ("dpo", 3)]
    assert {r["labels_total"] for r in runs} == {216}
    assert "3 rounds - 1 round" in capsys.readouterr().out


def test_lab_judge_probe_runs_and_scores_the_rules_against_gold(monkeypatch, capsys):

    from rlhfkit import lab
    from rlhfkit.feedback import lab_judge

    size, lm_weight, train = lab.TINY_SIZES["judge"], lab_judge.LM_WEIGHT, lab_judge._train
    argv = ["lab_judge_probe.py", "--steps", "3", "--n-train", "20", "--eval-prompts", "30", "--lm-weight", "3"]
    monkeypatch.setattr(sys, "argv", argv + ["--layers", "1", "--equal-share", "0.5", "--pretrain-steps", "2"])
    module = runpy.run_path(str(REPO / "bench" / "lab_judge_probe.py"), run_name="__main__")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["size"]["num_hidden_layers"] == 1 and result["steps"] == 3 and result["n_pairs"] > 10
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["rules"]["fewer_wrong"] <= 1
    assert (lab.TINY_SIZES["judge"], lab_judge.LM_WEIGHT, lab_judge._train) == (size, lm_weight, train)  # put back
    # " apple, cat." vs " pear.": 2 items (one wrong) vs 1 right item, for 1 fruit asked
    signs = module["rules"]("Q: List 1 fruits.\nA:", " apple, cat.", " pear.")
    assert signs == {"shorter": -1, "closer_to_n": -1, "fewer_wrong": -1, "right_minus_wrong": -1}
