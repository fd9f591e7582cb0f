"""Shared fixtures: tiny lab models built once per test session (no network), the HH-RLHF file, and the hardware
this process sees (`cpu_only`, `fake_gpu`), so that tests of precision and devices pass on any machine."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tiny models run fastest on one thread; on shared cores, intra-op threads mostly spin and wait (set before torch
# is imported; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
HH_FILE = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


@pytest.fixture(scope="session")
def nano_model(tmp_path_factory) -> Path:
    """A nano lab model folder (tokenizer with pad token and chat template + random Llama)."""
    from rlhfkit.lab import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "nano", size="nano", seed=0)


@pytest.fixture(scope="session")
def hh_file() -> Path:
    if not HH_FILE.exists():
        pytest.skip(f"HH-RLHF test split not found at {HH_FILE} (it lives in ../shared/data)")
    return HH_FILE


@pytest.fixture
def cpu_only(monkeypatch) -> None:
    """This process sees neither a CUDA GPU nor MPS, whatever the machine has (what ``detect_hardware`` reads)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def fake_gpu(monkeypatch):
    """Pins a fake CUDA GPU for ``detect_hardware``: ``fake_gpu(bf16=True, memory_gb=24, count=1)``.

    Only what ``rlhfkit.core.hardware`` reads is faked; nothing can run on it (TrainingArguments would set the device).
    """
    import torch

    def pin(bf16: bool = True, memory_gb: float = 24.0, count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=memory_gb * 1e9)
        )

    return pin
