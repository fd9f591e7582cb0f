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
