"""Hardware -> precision: never bf16 on a CPU, bf16 / fp16 by GPU, every TRL config constructs."""

import torch
from transformers import TrainingArguments

from rlhfkit.core.hardware import Hardware, compute_dtype, detect_hardware, precision_kwargs


def test_cpu_precision_never_bf16(cpu_only):
    assert detect_hardware() == Hardware("cpu", bf16=False, fp16=False)
    kw = precision_kwargs()
    assert kw == {"bf16": False, "fp16": False, "use_cpu": True}
    assert compute_dtype() == torch.float32
    TrainingArguments(output_dir="/tmp/x", **kw)  # would raise with bf16=True on a CPU


def test_gpu_with_bf16_gets_bf16(fake_gpu):
    fake_gpu(bf16=True, memory_gb=80, count=2)
    assert detect_hardware() == Hardware("cuda", bf16=True, fp16=False, num_gpus=2, gpu_memory_gb=80)
    assert precision_kwargs() == {"bf16": True, "fp16": False, "use_cpu": False}
    assert compute_dtype() == torch.bfloat16


def test_gpu_without_bf16_gets_fp16(fake_gpu):
    fake_gpu(bf16=False, memory_gb=16)
    assert detect_hardware() == Hardware("cuda", bf16=False, fp16=True, num_gpus=1, gpu_memory_gb=16)
    assert precision_kwargs() == {"bf16": False, "fp16": True, "use_cpu": False}
    assert compute_dtype() == torch.float16


def test_mps_trains_in_fp32_off_the_cpu_flag(cpu_only, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert detect_hardware() == Hardware("mps", bf16=False, fp16=False)
    assert precision_kwargs() == {"bf16": False, "fp16": False, "use_cpu": False}
    assert compute_dtype() == torch.float32


def test_precision_from_hardware():
    assert precision_kwargs(Hardware("cuda", True, False, 1, 24)) == {"bf16": True, "fp16": False, "use_cpu": False}
    assert precision_kwargs(Hardware("cuda", False, True, 1, 16))["fp16"] is True
    assert precision_kwargs(Hardware("mps", False, False)) == {"bf16": False, "fp16": False, "use_cpu": False}


def test_trl_config_with_precision_kwargs_constructs_on_cpu(tmp_path, cpu_only):
    from trl import GRPOConfig, RewardConfig, SFTConfig

    for cls in (SFTConfig, RewardConfig, GRPOConfig):
        cfg = cls(output_dir=str(tmp_path), **precision_kwargs())
        assert cfg.bf16 is False
