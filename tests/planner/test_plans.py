"""plan(): invariants (monotone in batch and length, methods ordered, layouts' model copies), suggestions that
fit when re-planned, and the `rlhfkit plan` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhfkit.cli import main
from rlhfkit.core.errors import ConfigError
from rlhfkit.planner import plan

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"


@pytest.mark.parametrize("trainer", ["sft", "reward", "ppo", "grpo", "rloo", "dpo"])  # best_of_n: its own test
def test_plan_is_monotone_and_methods_are_ordered(trainer):
    kw = {"num_generations": 2} if trainer in ("grpo", "rloo") else {}
    base = plan(MODEL, trainer, "lora", 24, batch_size=2, seq_len=256, **kw)
    assert plan(MODEL, trainer, "lora", 24, batch_size=4, seq_len=256, **kw).total_bytes > base.total_bytes
    assert plan(MODEL, trainer, "lora", 24, batch_size=2, seq_len=512, **kw).total_bytes > base.total_bytes
    on = plan(MODEL, trainer, "lora", 24, batch_size=2, seq_len=256, gradient_checkpointing=True, **kw)
    off = plan(MODEL, trainer, "lora", 24, batch_size=2, seq_len=256, gradient_checkpointing=False, **kw)
    assert on.total_bytes < off.total_bytes and on.activations_checkpointed < on.activations_full
    totals = [
        plan(MODEL, trainer, m, 24, batch_size=2, seq_len=256, **kw).total_bytes for m in ("qlora", "lora", "full")
    ]
    assert totals == sorted(totals) and len(set(totals)) == 3


def test_reward_ensemble_members_are_counted():
    from rlhfkit.planner import model_dims

    dims, names = model_dims(MODEL), lambda p: [n for n, _ in p.copies]  # noqa: E731
    full = plan(MODEL, "ppo", "full", 80, reward_members=3)
    assert names(full) == ["policy", "reference", "reward model 0", "reward model 1", "reward model 2", "value model"]
    assert full.total_bytes > plan(MODEL, "ppo", "full", 80).total_bytes
    grpo = plan(MODEL, "grpo", "lora", 24, reward_members=4)  # one reward base + 4 adapters and heads
    assert names(grpo) == ["policy base", "reward base (4 members)"]
    one = plan(MODEL, "grpo", "lora", 24)
    lora_bytes, head_bytes = dims.lora_params(16) * 4, dims.hidden_size * 2
    assert grpo.breakdown["adapters"] - one.breakdown["adapters"] == 4 * (lora_bytes + head_bytes)
    shared = plan(MODEL, "ppo", "qlora", 24, reward_members=4)  # K reward adapters + heads on the shared base
    assert names(shared) == ["shared base (4-bit)"]
    extra = shared.breakdown["adapters"] - plan(MODEL, "ppo", "qlora", 24).breakdown["adapters"]
    assert extra == 3 * (lora_bytes + head_bytes)
    assert plan("Qwen/Qwen2.5-7B-Instruct", "ppo", "qlora", 24, reward_members=4).fits  # 4 members fit a 24 GB GPU
    with pytest.raises(ConfigError, match="reward_members=0 must be"):
        plan(MODEL, "ppo", "qlora", 24, reward_members=0)


def test_impossible_plan_says_so():
    p = plan("meta-llama/Llama-3.1-8B-Instruct", "ppo", "qlora", 8)
    assert p.verdict == "does not fit" and not p.suggestions and "larger GPU" in p.notes[-1]


def test_trainer_layouts_hold_the_right_model_copies():
    names = lambda p: [n for n, _ in p.copies]  # noqa: E731
    assert names(plan(MODEL, "ppo", "full", 80)) == ["policy", "reference", "reward model", "value model"]
    assert names(plan(MODEL, "ppo", "qlora", 24)) == ["shared base (4-bit)"]
    assert len(plan(MODEL, "ppo", "lora", 24, layout="separate").copies) == 3  # reference = adapter disabled
    assert names(plan(MODEL, "grpo", "full", 80)) == ["policy", "reference", "reward model"]
    assert names(plan(MODEL, "grpo", "full", 80, beta=0.0)) == ["policy", "reward model"]
    shared = plan(MODEL, "ppo", "lora", 24)
    assert shared.total_bytes < plan(MODEL, "ppo", "lora", 24, layout="separate").total_bytes
    with pytest.raises(ConfigError, match="layout='shared' needs LoRA"):
        plan(MODEL, "ppo", "full", 80, layout="shared")


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("kto",), {}, "trainer='kto' is not one of rlhfkit's trainers"),
        (("sft", "int8"), {}, "preset='int8' is not a method preset"),
        (("sft", "lora", 0), {}, "gpu=0 must be the GPU memory in GB"),
        (("sft", "lora"), {"layout": "shared"}, "layout='shared' applies to stage=ppo only; drop it for stage=sft"),
        (("grpo", "lora", 24), {"batch_size": 4, "num_generations": 3}, "must be divisible by num_generations=3"),
        (("sft", "lora", 24), {"batch_size": 0}, r"batch_size=0 must be a whole number >= 1 \(--batch-size\)"),
        (("sft", "lora", 24), {"seq_len": -5}, r"seq_len=-5 must be a whole number >= 1 \(--seq-len\)"),
        (("ppo", "lora", 24), {"rollout_batch_size": 0}, "rollout_batch_size=0 must be a whole number >= 1, or"),
        (("grpo", "lora", 24), {"num_generations": 1}, "num_generations=1 must be >= 2"),
    ],
)
def test_plan_errors_name_the_value(args, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        plan(MODEL, *args, **kwargs)


@pytest.mark.parametrize(
    "model, trainer, preset, gpu",
    [
        ("meta-llama/Llama-3.1-8B-Instruct", "sft", "full", 24),
        ("meta-llama/Llama-3.1-8B-Instruct", "ppo", "lora", 24),
        ("Qwen/Qwen2.5-7B-Instruct", "grpo", "lora", 24),
        ("Qwen/Qwen2.5-3B-Instruct", "reward", "lora", 8),
        ("Qwen/Qwen2.5-1.5B-Instruct", "sft", "full", 12),
    ],
)
def test_suggestions_fit_when_replanned(model, trainer, preset, gpu):
    p = plan(model, trainer, preset, gpu)
    assert not p.fits and p.suggestions
    for s in p.suggestions:
        kwargs = {**p.settings, "preset": preset, **s.overrides}
        if kwargs.get("preset") != "full" and trainer == "ppo" and "layout" in s.overrides:
            kwargs["layout"] = s.overrides["layout"]
        again = plan(model, trainer, kwargs.pop("preset"), gpu, **kwargs)
        assert again.fits and again.total_bytes == s.total_bytes, s.change


def test_cli_plan_table_json_and_errors(capsys, nano_model):
    assert main(["plan", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--stage", "ppo", "--gpu", "8"]) == 0
    out = capsys.readouterr().out
    assert "shared base (4-bit)" in out or "weights" in out
    assert "verdict: fits" in out
    argv = ["plan", "--model", str(nano_model), "--stage", "grpo", "--preset", "lora", "--gpu", "8", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "fits" and data["breakdown"]["kv_cache"] > 0
    assert main(["plan", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--stage", "sft", "--preset", "full"]) == 1
    assert "fix:" in capsys.readouterr().out
    assert main(["plan", "--model", "acme/nothing", "--stage", "sft"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "acme/nothing" in err[0] and "Qwen/Qwen2.5-0.5B-Instruct" in err[0]


def test_cli_plan_does_not_import_torch():
    code = (
        "import sys; from rlhfkit.cli import main; "
        "main(['plan', '--model', 'Qwen/Qwen2.5-7B-Instruct', '--stage', 'grpo', '--json']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_the_alternatives_hold_their_model_copies():
    """DPO: policy + reference (none with LoRA), chosen and rejected forwarded together; RLOO: GRPO's copies with its
    own KL default; best-of-N rounds: the larger of sampling (policy + SFT model + KV cache) and fine-tuning."""
    from rlhfkit.core.presets import RLOO_BETA

    names = lambda p: [n for n, _ in p.copies]  # noqa: E731
    assert names(plan(MODEL, "dpo", "full", 80)) == ["policy", "reference"]
    assert names(plan(MODEL, "dpo", "lora", 80)) == ["policy base"]
    same = {"batch_size": 2, "seq_len": 512, "gradient_checkpointing": False}
    dpo, reward = plan(MODEL, "dpo", "lora", 80, **same), plan(MODEL, "reward", "lora", 80, **same)
    assert dpo.activations_full == pytest.approx(reward.activations_full, rel=0.01)  # 2 x batch sequences each
    assert dpo.breakdown["logits"] > 0 and dpo.breakdown["kv_cache"] > 0  # the LM head; the KL samples

    rloo, grpo = plan(MODEL, "rloo", "full", 80), plan(MODEL, "grpo", "full", 80)
    assert rloo.settings["beta"] == RLOO_BETA and names(rloo) == names(grpo) == ["policy", "reference", "reward model"]
    assert plan(MODEL, "rloo", "full", 80, beta=0).copies == [c for c in rloo.copies if c[0] != "reference"]

    small = plan(MODEL, "best_of_n", "qlora", 80, generation_batch_size=1)
    big = plan(MODEL, "best_of_n", "qlora", 80, generation_batch_size=512)
    assert big.total_bytes > small.total_bytes and "sampling phase" in big.notes[-1]
    sft = plan(MODEL, "sft", "qlora", 80, batch_size=small.settings["batch_size"],
               grad_accum=small.settings["grad_accum"], seq_len=256 + small.settings["seq_len"])  # fmt: skip
    assert small.total_bytes >= sft.total_bytes  # at least the fine-tuning phase
