"""The check-only commands build every TRL config and import no trainer: the config classes live in modules that
import none (the layering ``tests/test_layout.py`` keeps), so nothing is patched to keep them cheap. Each case runs in
a fresh interpreter."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

# Modules that hold a trainer (TRL's, transformers', rlhfkit's) or the pipeline's stages, which import them all.
TRAINERS = (
    "transformers.trainer",
    "trl.trainer.grpo_trainer",
    "trl.trainer.dpo_trainer",
    "trl.trainer.sft_trainer",
    "rlhfkit.sft",
    "rlhfkit.reward.trainer",
    "rlhfkit.rl.ppo.trainer",
    "rlhfkit.rl.grpo_rloo",
    "rlhfkit.rl.dpo",
    "rlhfkit.rl.best_of_n",
    "rlhfkit.pipeline.stages",
)


def run_python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "configs/lab/pipeline.yaml", "--check"],
        ["plan", "--config", "configs/qwen2.5-7b-instruct/pipeline.yaml"],
    ],
)
def test_check_only_commands_build_every_trl_config_without_a_trainer(argv):
    got = run_python(
        f"""
        import json, sys
        from rlhfkit.cli import main
        code = main({argv!r})
        print(json.dumps({{"code": code, "loaded": [m for m in {TRAINERS!r} if m in sys.modules],
                          "trl": "trl.trainer.sft_config" in sys.modules}}))
        """
    )
    assert got == {"code": 0, "loaded": [], "trl": True}  # TRL's config really was built, no trainer imported


def test_trl_config_errors_still_reach_check():
    # A value only TRL's own __post_init__ rejects must still fail `--check` as one line (no peft needed for that).
    argv = ["run", "configs/lab/pipeline.yaml", "--check", "--set", "sft.lr_scheduler_type=sideways"]
    out = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "sideways" in lines[0] and "Traceback" not in out.stderr
