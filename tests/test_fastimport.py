"""The check-only commands import TRL's configs without peft / bitsandbytes / modeling_utils, and nothing answers
differently afterwards: each case runs in a fresh interpreter (the deferral only acts before transformers'
``trainer_utils`` is first imported)."""

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

HEAVY = ("peft", "bitsandbytes", "transformers.modeling_utils", "datasets", "trl.trainer.grpo_trainer")


def run_python(code: str, env: dict | None = None) -> dict:
    import os

    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "configs/lab/pipeline.yaml", "--check"],
        ["plan", "--config", "configs/qwen2.5-7b-instruct/pipeline.yaml"],  # qlora presets: LoraConfig not needed
    ],
)
def test_check_only_commands_build_every_trl_config_without_the_training_stack(argv):
    got = run_python(
        f"""
        import json, sys
        from rlhfkit.cli import main
        code = main({argv!r})
        print(json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules],
                          "trl": "trl.trainer.sft_config" in sys.modules}}))
        """
    )
    assert got == {"code": 0, "loaded": [], "trl": True}  # TRL's config really was built, its trainers not imported


def test_trl_config_errors_still_reach_check():
    # A value only TRL's own __post_init__ rejects must still fail `--check` as one line (no peft needed for that).
    out = subprocess.run(
        [sys.executable, "-m", "rlhfkit.cli", "run", "configs/lab/pipeline.yaml", "--check",
         "--set", "sft.lr_scheduler_type=sideways"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "sideways" in lines[0] and "Traceback" not in out.stderr


def test_peft_arrives_on_first_use_and_answers_as_without_deferral(tmp_path):
    got = run_python(
        f"""
        import json, sys
        from rlhfkit.fastimport import import_trl_configs_fast, defer_peft_import
        import_trl_configs_fast()
        from trl import SFTConfig
        SFTConfig(output_dir={str(tmp_path)!r}, use_cpu=True, bf16=False, report_to="none")
        before = "peft" in sys.modules
        import transformers.trainer_utils as tu
        from peft import LoraConfig, get_peft_model
        from rlhfkit.lab import build_tiny_model
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(build_tiny_model({str(tmp_path / "nano")!r}, size="nano"))
        plain = tu._is_peft_model(model)
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
        print(json.dumps({{"before": before, "plain": plain, "peft": tu._is_peft_model(peft_model),
                          "unwrapped": type(tu.unwrap_peft_model(peft_model)).__name__,
                          "again": defer_peft_import()}}))
        """
    )
    assert got == {"before": False, "plain": False, "peft": True, "unwrapped": "LlamaForCausalLM", "again": False}


def test_kubeflow_check_is_transformers_own_logic():
    code = """
        import json
        from rlhfkit.fastimport import kubeflow_check_without_models
        done = kubeflow_check_without_models()
        import sys, transformers.integrations as ti
        print(json.dumps({"done": done, "answer": ti.is_kubeflow_available(),
                          "models": "transformers.modeling_utils" in sys.modules}))
        """
    on = {"KUBEFLOW_TRAINER_SERVER_URL": "http://x"}
    assert run_python(code, on) == {"done": True, "answer": True, "models": False}
    off = {"KUBEFLOW_TRAINER_SERVER_URL": "http://x", "DISABLE_KUBEFLOW_INTEGRATION": "true"}
    assert run_python(code, off)["answer"] is False


def test_nothing_changes_once_transformers_trainer_modules_are_loaded():
    import transformers.integrations.integration_utils  # noqa: F401  (what a training process has loaded)
    import transformers.trainer_utils as tu
    from rlhfkit.fastimport import defer_peft_import, kubeflow_check_without_models

    before = tu.is_peft_available
    assert defer_peft_import() is False and kubeflow_check_without_models() is False
    assert tu.is_peft_available is before
