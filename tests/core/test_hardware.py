"""Hardware -> precision: never bf16 on a CPU, bf16 / fp16 by GPU, every TRL config constructs."""

from transformers import TrainingArguments

from rlhfkit.core.hardware import Hardware, detect_hardware, precision_kwargs


def test_cpu_precision_never_bf16():
    assert detect_hardware().device == "cpu"  # this project's CI has no GPU
    kw = precision_kwargs()
    assert kw == {"bf16": False, "fp16": False, "use_cpu": True}
    TrainingArguments(output_dir="/tmp/x", **kw)  # would raise with bf16=True on a CPU


def test_precision_from_hardware():
    assert precision_kwargs(Hardware("cuda", True, False, 1, 24)) == {"bf16": True, "fp16": False, "use_cpu": False}
    assert precision_kwargs(Hardware("cuda", False, True, 1, 16))["fp16"] is True
    assert precision_kwargs(Hardware("mps", False, False)) == {"bf16": False, "fp16": False, "use_cpu": False}


def test_trl_config_with_precision_kwargs_constructs_on_cpu(tmp_path):
    from trl import GRPOConfig, RewardConfig, SFTConfig

    for cls in (SFTConfig, RewardConfig, GRPOConfig):
        cfg = cls(output_dir=str(tmp_path), **precision_kwargs())
        assert cfg.bf16 is False
