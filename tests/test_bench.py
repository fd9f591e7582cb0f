"""The benchmarks run: each at tiny sizes, so that a change that breaks one (or the equality it asserts) fails here."""

import runpy
import sys

from tests.conftest import REPO


def test_sample_throughput_runs_and_finds_the_greedy_responses_identical(nano_model, monkeypatch, capsys):
    argv = ["sample_throughput.py", "--model", str(nano_model), "--prompts", "6", "--k", "2", "--max-new-tokens", "5"]
    monkeypatch.setattr(sys, "argv", argv + ["--batch-size", "4", "--repeats", "1"])
    runpy.run_path(str(REPO / "bench" / "sample_throughput.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "identical greedy responses: 12 of 12" in out and "speed-up, batched / loop:" in out


def test_lab_judge_probe_runs_and_scores_the_rules_against_gold(monkeypatch, capsys):
    import json

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
