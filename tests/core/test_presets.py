import pytest
from peft import LoraConfig
from transformers import BitsAndBytesConfig

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.hardware import Hardware
from rlhfkit.core.presets import GPU_SIZES, TRAINERS, describe, gpu_preset, method_preset

CPU = Hardware("cpu", bf16=False, fp16=False)
AMPERE = Hardware("cuda", bf16=True, fp16=False, num_gpus=1, gpu_memory_gb=24)
TURING = Hardware("cuda", bf16=False, fp16=True, num_gpus=1, gpu_memory_gb=16)


def test_full_has_no_adapter_or_quantization():
    p = method_preset("full", CPU)
    assert p.lora is None and p.quantization is None and not p.uses_peft


def test_lora_defaults_target_all_linear():
    p = method_preset("lora", CPU)
    assert isinstance(p.lora, LoraConfig) and p.quantization is None
    assert p.lora.target_modules == "all-linear" and p.lora.r == 16 and p.lora.lora_alpha == 32


def test_qlora_is_nf4_double_quant_with_hardware_compute_dtype():
    import torch

    for hw, dtype in [(CPU, torch.float32), (AMPERE, torch.bfloat16), (TURING, torch.float16)]:
        q = method_preset("qlora", hw).quantization
        assert isinstance(q, BitsAndBytesConfig)
        assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
        assert q.bnb_4bit_compute_dtype == dtype


def test_overrides_and_reward_task_type():
    p = method_preset("lora", CPU, r=64, lora_alpha=128)
    assert p.lora.r == 64 and p.lora.lora_alpha == 128
    seq = method_preset("lora", CPU, task_type="SEQ_CLS")
    assert seq.lora.task_type == "SEQ_CLS" and "score" in seq.lora.modules_to_save


def test_unknown_names_and_fields_list_valid_ones():
    with pytest.raises(ConfigError, match=r"choose one of \['full', 'lora', 'qlora'\]"):
        method_preset("qlora8")
    with pytest.raises(ConfigError, match="unknown LoRA field"):
        method_preset("lora", CPU, rank=8)
    with pytest.raises(ConfigError, match=r"\[8, 12, 16, 24, 48, 80\]"):
        gpu_preset(20, "sft")
    with pytest.raises(ConfigError, match="choose one of"):
        gpu_preset(24, "kto")
    with pytest.raises(ConfigError, match="valid fields"):
        gpu_preset(24, "sft", batch_size=4)
    with pytest.raises(ConfigError, match="unknown preset"):
        describe("huge")


@pytest.mark.parametrize("stage", TRAINERS)
def test_gpu_presets_are_monotone_and_consistent(stage):
    rows = [gpu_preset(gb, stage) for gb in GPU_SIZES]
    for small, big in zip(rows, rows[1:]):
        assert big["per_device_train_batch_size"] >= small["per_device_train_batch_size"]
        assert small["gradient_checkpointing"] or not big["gradient_checkpointing"]
    if stage in ("grpo", "rloo"):  # TRL requires the generation batch to be divisible by num_generations
        for r in rows:
            assert (r["per_device_train_batch_size"] * r["gradient_accumulation_steps"]) % r["num_generations"] == 0


def test_gpu_preset_fields_are_real_trl_config_fields():
    from trl import GRPOConfig, RewardConfig, SFTConfig

    from rlhfkit.rl.configs import BestOfNConfig, DPOConfig, RLOOConfig
    from rlhfkit.rl.ppo.config import PPOConfig

    classes = {"sft": SFTConfig, "reward": RewardConfig, "grpo": GRPOConfig, "ppo": PPOConfig, "rloo": RLOOConfig,
               "dpo": DPOConfig, "best_of_n": BestOfNConfig}  # fmt: skip
    assert set(classes) == set(TRAINERS)
    for stage, cls in classes.items():
        assert set(gpu_preset(24, stage)) <= set(cls.__dataclass_fields__), stage


def test_gpu_preset_accepts_gb_suffix_and_overrides():
    assert gpu_preset("24GB", "sft", max_length=512)["max_length"] == 512


def test_describe_is_json_ready():
    import json

    json.dumps(describe("qlora"), default=str)
    assert describe(24, "ppo")["ppo"]["response_length"] == 256
