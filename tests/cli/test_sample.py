"""``rlhfkit sample``: refusals at the door (before the model loads), a pipeline run's model, a killed run resumed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rlhfkit.cli import main
from rlhfkit.data.comparisons import comparison_row, read_comparisons
from rlhfkit.pipeline.manifest import Manifest

RLHFKIT = [sys.executable, "-m", "rlhfkit.cli"]


@pytest.fixture
def no_model_load(monkeypatch):
    """A model load fails the test: every refusal must come before it."""
    import rlhfkit.models.sampling

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(rlhfkit.models.sampling, "load_for_sampling", refuse)


def _errors(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_bad_arguments_are_refused_together_before_the_model_loads(tmp_path, capsys, no_model_load):
    args = ["sample", str(tmp_path / "nope"), str(tmp_path / "none.jsonl"), "--k", "1", "--out", str(tmp_path)]
    assert main(args + ["--top-p", "0", "--temperature", "0"]) == 2
    errors = _errors(capsys)
    assert errors == [
        "error: --k 1 must be >= 2: a comparison needs at least two responses (InstructGPT: 4-9)",
        "error: --temperature 0 is greedy decoding: a prompt's K responses would all be the same; use > 0 (1: the "
        "policy itself)",
        "error: --top-p 0.0 must be in (0, 1] (1: every token, the policy itself)",
        f"error: MODEL='{tmp_path / 'nope'}' does not exist; give an existing model folder or a hub id like "
        "'org/name'",
        f"error: PROMPTS='{tmp_path / 'none.jsonl'}' not found; check the path (relative paths start where rlhfkit "
        "runs)",
        f"error: --out '{tmp_path}' is a folder; give a file name (rlhfkit will not replace a folder)",
    ]
    assert main(["sample", "lab", "--out", str(tmp_path / "c.jsonl")]) == 2
    assert _errors(capsys) == ["error: give MODEL (a model folder or hub id) or --run RUN_DIR --stage sft|rl"]
    assert main(["sample", "lab:nano", "lab", "--out", str(tmp_path / "c.jsonl")]) == 2
    assert "is an untrained lab model" in _errors(capsys)[0]


def test_an_out_file_of_other_settings_or_not_a_comparisons_file_is_refused(
    nano_model, tmp_path, capsys, no_model_load
):
    out = tmp_path / "c.jsonl"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Q: List 2 fruits.\nA:"}) + "\n")
    sampling = {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 128, "seed": 0, "k": 4, "duplicates": 0}
    row = comparison_row("Q: List 2 fruits.\nA:", ["a", "b"], model=str(nano_model), sampling=sampling)
    out.write_text(json.dumps(row) + "\n")
    assert main(["sample", str(nano_model), str(prompts), "--out", str(out)]) == 2
    assert _errors(capsys) == [
        f"error: --out {out} was sampled with other settings: temperature 0.7 (now 1.0); give another --out, or the "
        "same model and settings to resume it"
    ]
    assert main(["sample", str(nano_model), str(prompts), "--out", str(out), "--temperature", "0.7"]) == 0
    assert "all 1 prompts are done already" in capsys.readouterr().out
    out.write_text("id,text\n1,mine\n")
    assert main(["sample", str(nano_model), str(prompts), "--out", str(out)]) == 2
    (error,) = _errors(capsys)
    assert error.startswith(f"error: {out}: row 1 is not JSON")
    assert error.endswith("give another --out (rlhfkit appends only to a comparisons file `rlhfkit sample` wrote)")
    assert out.read_text() == "id,text\n1,mine\n"


def _run_folder(tmp_path, nano_model, rl_status):
    manifest = Manifest(tmp_path / "run")
    manifest.start("sft", {"model": {"model_name_or_path": "lab:nano", "preset": "full"}}, "h1")
    manifest.finish("sft", {"model_dir": str(nano_model)}, {})
    manifest.start("rl", {}, "h2")
    manifest.update("rl", status=rl_status)
    return tmp_path / "run"


def test_a_pipeline_runs_model_is_sampled_by_stage(nano_model, tmp_path, capsys):
    run = _run_folder(tmp_path, nano_model, rl_status="running")
    out = tmp_path / "c.jsonl"
    args = ["sample", "--run", str(run), "lab", "--num-prompts", "3", "--k", "2", "--max-new-tokens", "6"]
    assert main(args + ["--stage", "rl", "--out", str(out)]) == 2
    assert _errors(capsys) == [
        f"error: --run '{run}': stage rl has not finished (running); finish it with `rlhfkit run` or sample another "
        "--stage"
    ]
    assert main(args + ["--out", str(out)]) == 0
    assert "wrote 3 rows (6 responses)" in capsys.readouterr().out
    rows = read_comparisons(out)
    assert len(rows) == 3 and {r["model"] for r in rows} == {f"run:{run.resolve()}:sft"}
    assert main(["sample", str(nano_model), "lab", "--run", str(run), "--out", str(out)]) == 2
    assert _errors(capsys)[0].startswith(f"error: give MODEL ('{nano_model}') or --run '{run}', not both")


@pytest.mark.slow  # two rlhfkit processes
def test_a_sigkilled_run_resumed_writes_the_file_an_unkilled_run_writes(nano_model, tmp_path):
    args = ["sample", str(nano_model), "lab", "--k", "3", "--max-new-tokens", "16", "--batch-size", "3"]
    args += ["--seed", "1", "--num-prompts", "20"]
    whole, killed = tmp_path / "whole.jsonl", tmp_path / "killed.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(RLHFKIT + args + ["--out", str(killed)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if killed.exists() and killed.read_text().count("\n") >= 5:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    assert 5 <= len(read_comparisons(killed)) < 20
    assert main(args + ["--out", str(whole)]) == 0
    resumed = subprocess.run(RLHFKIT + args + ["--out", str(killed)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "prompts were already done" in resumed.stdout
    assert killed.read_text() == whole.read_text() and len(read_comparisons(whole)) == 20
