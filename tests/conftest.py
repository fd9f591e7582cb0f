"""Shared fixtures: tiny lab models built once per test session (no network), and the HH-RLHF file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

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
