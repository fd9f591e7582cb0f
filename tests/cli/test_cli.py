import json
import subprocess
import sys
import time

import pytest
import yaml

from rlhfkit.cli import build_parser, main

RLHFKIT = [sys.executable, "-m", "rlhfkit.cli"]


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys, rlhfkit.cli as c; c.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    start = time.perf_counter()
    subprocess.run(RLHFKIT + ["--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 5  # generous bound for a loaded CI box; typical ~0.1 s


def test_presets_show_and_bad_name(capsys):
    assert main(["presets", "show", "qlora"]) == 0
    assert '"nf4"' in capsys.readouterr().out
    assert main(["presets", "show", "24", "--stage", "sft"]) == 0
    assert main(["presets", "show", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown preset 'tiny'")


def test_cli_error_exits_2_without_traceback():
    out = subprocess.run(RLHFKIT + ["presets", "show", "7"], capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "error:" in out.stderr


def test_every_command_is_registered():
    # One module, no optional command modules: a command that failed to register would fail here, not vanish.
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == ["run", "demo", "compare", "presets", "data", "sample", "label", "eval-rm", "plan"]
    assert set(sub.choices["presets"]._subparsers._group_actions[0].choices) == {"list", "show"}
    assert set(sub.choices["data"]._subparsers._group_actions[0].choices) == {"convert", "agreement"}


def test_demo_prints_its_config(capsys):
    assert main(["demo", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert {"sft", "reward", "ppo", "rl"} <= set(config)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "Q", "response_a": "a", "response_b": "b", "votes": [1, 0]}, "holds votes data, not preference"),
        ({"prompt": "Q", "responses": ["a", "b"], "ranking": [0, 1]}, "holds rankings data, not preference"),
        ({"prompt": "Q", "chosen": "a"}, "cannot tell the preference format from columns ['chosen', 'prompt']"),
    ],
)
def test_eval_rm_auto_format_reads_pairs_only(tmp_path, capsys, row, message):
    # Detected by data.detect_format (the one detector); the data error comes before the model is loaded.
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(row) + "\n")
    assert main(["eval-rm", str(tmp_path / "no-model"), str(data), "--out", str(tmp_path / "out")]) == 2
    model, pairs = capsys.readouterr().err.strip().splitlines()  # every problem at once, one line each
    assert model.startswith(f"error: MODEL='{tmp_path / 'no-model'}' does not exist")
    assert pairs.startswith(f"error: {data}: {message}")
    assert "rlhfkit data convert" in pairs and ("--format hh|columns" in pairs or "evaluate pairs.jsonl" in pairs)
    assert not (tmp_path / "out").exists()
