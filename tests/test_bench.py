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
