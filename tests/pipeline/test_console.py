"""What ``rlhfkit run`` prints without a terminal (CI logs, captured output): the stage lines, one result line per
training run and the summary, no raw log dicts and no control characters; ``--verbose`` prints TRL's dicts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pipeline.test_compare import tiny

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, *flags: str) -> list[str]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(tiny(tmp_path / "run")))
    env = {k: v for k, v in os.environ.items() if k != "RLHFKIT_VERBOSE"} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run(  # stdout is a pipe: not a terminal
        [sys.executable, "-m", "rlhfkit.cli", "run", str(config), *flags],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return (out.stdout + out.stderr).splitlines()


@pytest.mark.slow
def test_a_run_prints_one_result_line_per_training_run_and_no_log_dicts(tmp_path):
    lines = _run(tmp_path)
    text = "\n".join(lines)
    assert "{'" not in text and "\x1b" not in text and "\r" not in text
    assert [line.split(":")[0] for line in lines if " steps in " in line] == ["sft", "reward", "ppo"]
    ppo = next(line for line in lines if line.startswith("ppo: ") and " steps in " in line)
    assert "proxy " in ppo and "KL/token " in ppo and "(caution " in ppo and "gold " in ppo and "alerts " in ppo
    # the reward model's new score head goes to the log; transformers' notices that say nothing to a user are dropped
    assert "LOAD REPORT" not in text and "were not sharded" not in text and "mtime may not" not in text
    assert len(lines) < 60, text


@pytest.mark.slow
def test_verbose_prints_trls_log_dicts(tmp_path):
    lines = _run(tmp_path, "--verbose", "--until", "sft")
    assert any(line.startswith("{'") for line in lines), "\n".join(lines)  # a dict per log
    assert not any(" steps in " in line for line in lines)
