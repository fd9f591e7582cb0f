"""What this process trains on, and the precision that follows from it.

* :func:`detect_hardware`: CUDA (with or without bf16), MPS or CPU.
* :func:`precision_kwargs`: ``bf16`` / ``fp16`` / ``use_cpu`` for any ``TrainingArguments`` -- bf16 where the GPU
  supports it, fp16 on older CUDA GPUs, fp32 on MPS and CPU -- so no TRL config (which defaults to ``bf16=True``)
  fails on a CPU.
* :func:`compute_dtype`: the dtype models are loaded and computed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hardware:
    """What this process trains on.

    Attributes:
        device: ``cuda``, ``mps`` or ``cpu``.
        bf16: bf16 mixed precision is supported (Ampere or newer CUDA GPUs).
        fp16: fp16 mixed precision should be used (CUDA GPUs without bf16).
        num_gpus: visible CUDA devices.
        gpu_memory_gb: memory of GPU 0 in GB, or None.
    """

    device: str
    bf16: bool
    fp16: bool
    num_gpus: int = 0
    gpu_memory_gb: float | None = None


def detect_hardware() -> Hardware:
    """Detect CUDA (with or without bf16), MPS or CPU."""
    import torch

    if torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
        mem = torch.cuda.get_device_properties(0).total_memory / 1e9
        return Hardware("cuda", bf16=bf16, fp16=not bf16, num_gpus=torch.cuda.device_count(), gpu_memory_gb=mem)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        # Mixed precision on MPS is not reliable across torch versions: train in fp32 there.
        return Hardware("mps", bf16=False, fp16=False)
    return Hardware("cpu", bf16=False, fp16=False)


def precision_kwargs(hardware: Hardware | None = None) -> dict[str, bool]:
    """``bf16`` / ``fp16`` / ``use_cpu`` for any ``TrainingArguments`` (TRL configs included)."""
    hw = hardware or detect_hardware()
    return {"bf16": hw.bf16, "fp16": hw.fp16, "use_cpu": hw.device == "cpu"}


def compute_dtype(hardware: Hardware | None = None):
    """The dtype models are loaded and computed in: bf16, else fp16 on CUDA, else fp32."""
    import torch

    hw = hardware or detect_hardware()
    if hw.bf16:
        return torch.bfloat16
    if hw.fp16:
        return torch.float16
    return torch.float32
