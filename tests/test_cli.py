import subprocess
import sys
import time

from rlhfkit.cli import main

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
