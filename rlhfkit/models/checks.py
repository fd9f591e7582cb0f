"""A model checked before a run uses it, without loading weights: its config and tokenizer load (a local folder or a
hub id), and a reward model has a trained one-output score head. :func:`model_problems` returns one-line problems
naming the key, the value and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhfkit.core.arguments import LAB_PREFIX

# ----------------------------------------------------------------------------------------------- models
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model")


HEAD_NAMES = ("score", "classifier")  # the one-output head AutoModelForSequenceClassification adds


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.rstrip("/").count("/") > 1 or Path(name).expanduser().exists()


def _weight_names(folder: Path) -> list[str] | None:
    """Tensor names of a safetensors model folder, read from the file headers (no weights), or None without any."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return list(json.loads(index.read_text()).get("weight_map", {}))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    names = []
    for path in files:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            names += [k for k in json.loads(f.read(size)) if k != "__metadata__"]
    return names


def _reward_head_problem(folder: Path, key: str, config: dict[str, Any]) -> str | None:
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        return (
            f"{key}={str(folder)!r} is a {'/'.join(archs) or 'model'} without a trained score head (not a reward "
            "model); give the model/ folder of a reward run (rlhfkit run's reward/model, recipes/reward.py)"
        )
    try:
        names = _weight_names(folder)
    except (OSError, ValueError):
        return f"{key}={str(folder)!r}: its safetensors files are unreadable; save the reward model again"
    if names is not None and not any(part in HEAD_NAMES for n in names for part in n.split(".")[:-1]):
        return f"{key}={str(folder)!r} holds no score-head weights ({'/'.join(HEAD_NAMES)}.weight); train it first"
    return None


def model_problems(
    name: str, key: str, *, reward: bool = False, revision: str | None = None, trust_remote_code: bool = False
) -> list[str]:
    """Problems of a model (``lab:*`` has none: it is built at run time): a local folder needs a ``config.json`` and a
    tokenizer that load (and, with ``reward``, a trained score head); a hub id must resolve (offline: be cached).
    Reads configs, tokenizer files and safetensors headers only: no weights."""
    name = str(name)
    if name.startswith(LAB_PREFIX):
        return []
    from transformers import AutoConfig, AutoTokenizer

    kw = {"revision": revision, "trust_remote_code": trust_remote_code}
    if _looks_local(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            return [f"{key}={name!r} does not exist; give an existing model folder or a hub id like 'org/name'"]
        if not folder.is_dir():
            return [f"{key}={name!r} is a file; give the model's folder (the one holding config.json)"]
        if not (folder / "config.json").is_file():
            return [f"{key}={name!r} has no config.json: not a model folder; give a folder written by save_pretrained"]
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            return [
                f"{key}={name!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}); save the tokenizer there"
            ]
    problems = []
    try:
        config = AutoConfig.from_pretrained(name, **kw).to_dict()
    except Exception as e:  # OSError (not found / offline), ValueError (unknown model type), JSON errors
        return [
            f"{key}={name!r}: its config does not load ({str(e).splitlines()[0][:200]}); give a model folder or hub id"
        ]
    try:
        AutoTokenizer.from_pretrained(name, **kw)
    except Exception as e:
        problems.append(f"{key}={name!r}: its tokenizer does not load ({str(e).splitlines()[0][:200]}); save it again")
    if reward and _looks_local(name):
        problems += [p for p in [_reward_head_problem(Path(name).expanduser(), key, config)] if p]
    elif reward and not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        problems.append(f"{key}={name!r} is not a sequence-classification (reward) model; give a trained reward model")
    return problems
