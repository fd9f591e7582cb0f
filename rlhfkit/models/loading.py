"""Loading and saving done right once, for every stage: tokenizer fixes, policy and reward models, merged saves.

* :func:`prepare_tokenizer`: a pad token distinct from EOS (a model trained with pad == eos never learns
  to stop, and PPO cannot tell padding from the end of a response), the padding side a stage needs
  (right for training, left for generation), and a chat template when the tokenizer has none.
* :func:`load_policy`, :func:`load_reward_model`: ``from_pretrained`` on a hub id or local path, with
  the method preset's quantisation, ``trust_remote_code`` off unless asked, safetensors weights.
* :func:`save_final` / :func:`merge_adapter`: ``<output_dir>/model`` written atomically; a LoRA adapter is kept in
  ``<output_dir>/adapter`` and merged into an unquantised copy of the base, so ``model/`` is an ordinary model.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.hardware import Hardware, compute_dtype, detect_hardware
from rlhfkit.core.io import atomic_path
from rlhfkit.core.presets import MethodPreset, method_preset

logger = logging.getLogger(__name__)

MODEL_SUBDIR = "model"  # <output_dir>/model: the final model + tokenizer of a training run
ADAPTER_SUBDIR = "adapter"  # <output_dir>/adapter: the LoRA adapter alone, when one was trained

PAD_TOKEN = "<|pad|>"
# Used when a tokenizer has no chat template: the HH-RLHF transcript format ("Human: ... Assistant: ..."),
# with EOS closing each assistant turn and {% generation %} marks so TRL's assistant_only_loss works.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant:' }}"
    "{% generation %}{{ ' ' + message['content'] + eos_token }}{% endgeneration %}{{ '\n\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


# ------------------------------------------------------------------------------------------ tokenizers
def prepare_tokenizer(tokenizer, padding_side: str = "right"):
    """Fix a tokenizer in place for RLHF and return it.

    * adds a pad token distinct from EOS when it has none or when pad == eos (the model's embeddings must
      then be resized: :func:`sync_model_with_tokenizer`);
    * sets the padding side: ``right`` for training, ``left`` for generation;
    * installs :data:`DEFAULT_CHAT_TEMPLATE` when it has no chat template.
    """
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side={padding_side!r} must be 'left' or 'right'")
    if tokenizer.eos_token is None:
        raise ConfigError(
            f"tokenizer {tokenizer.name_or_path!r} has no EOS token; set tokenizer.eos_token before training "
            "(responses need an end marker)"
        )
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if PAD_TOKEN in tokenizer.get_vocab():
            tokenizer.pad_token = PAD_TOKEN
        else:
            tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
            logger.info("added pad token %s (id %d) distinct from EOS", PAD_TOKEN, tokenizer.pad_token_id)
    tokenizer.padding_side = padding_side
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def sync_model_with_tokenizer(model, tokenizer) -> None:
    """Resize the embeddings when the tokenizer grew, and set ``pad_token_id`` in the model's configs."""
    embeddings = model.get_input_embeddings()
    if embeddings is not None and len(tokenizer) > embeddings.weight.shape[0]:
        # Mean-initialise new rows (transformers' default) so the added pad token does not skew outputs.
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config.eos_token_id is None:
            model.generation_config.eos_token_id = tokenizer.eos_token_id


def load_tokenizer(
    name_or_path: str | os.PathLike,
    padding_side: str = "right",
    trust_remote_code: bool = False,
    revision: str | None = None,
):
    """``AutoTokenizer.from_pretrained`` + :func:`prepare_tokenizer`."""
    from transformers import AutoTokenizer

    _check_source(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        str(name_or_path), trust_remote_code=trust_remote_code, revision=revision
    )
    return prepare_tokenizer(tokenizer, padding_side=padding_side)


# ------------------------------------------------------------------------------------------ models
def _check_source(name_or_path: str | os.PathLike) -> None:
    """A path-looking source that does not exist gets a clear error instead of a hub lookup."""
    s = str(name_or_path)
    looks_local = s.startswith((".", "/", "~")) or s.rstrip("/").count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(s)):
        raise ConfigError(f"model path {s!r} does not exist; give an existing folder or a hub id like 'org/name'")


def _model_kwargs(preset, hardware, trust_remote_code: bool, revision: str | None) -> dict[str, Any]:
    hw = hardware or detect_hardware()
    if not isinstance(preset, MethodPreset):
        preset = method_preset(preset, hw)
    kwargs: dict[str, Any] = {
        "dtype": compute_dtype(hw),
        "trust_remote_code": trust_remote_code,
        "revision": revision,
        "use_safetensors": None,  # safetensors when present (transformers prefers them); .bin only as fallback
    }
    if preset.quantization is not None:
        kwargs["quantization_config"] = preset.quantization
        if hw.device == "cuda":
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def load_policy(
    name_or_path: str | os.PathLike,
    preset="full",
    *,
    hardware: Hardware | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    adapter: str | os.PathLike | None = None,
    padding_side: str = "right",
    is_trainable: bool = True,
):
    """Load a causal-LM policy and its fixed tokenizer.

    Args:
        name_or_path: hub id or local folder.
        preset: ``full`` | ``lora`` | ``qlora`` or a :class:`~rlhfkit.core.presets.MethodPreset`. The base is
            loaded 4-bit for ``qlora``; LoRA adapters are *not* added here (TRL trainers add them from
            ``preset.lora``), except that ``adapter`` loads a trained one on top.
        adapter: folder of a trained peft adapter (e.g. an SFT LoRA) to load onto the base.
        is_trainable: whether a loaded ``adapter`` stays trainable.
    Returns:
        ``(model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(name_or_path, padding_side, trust_remote_code, revision)
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path), **_model_kwargs(preset, hardware, trust_remote_code, revision)
    )
    sync_model_with_tokenizer(model, tokenizer)
    if adapter is not None:
        from peft import PeftModel

        _check_source(adapter)
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
    return model, tokenizer


def load_reward_model(
    name_or_path: str | os.PathLike,
    preset="full",
    *,
    hardware: Hardware | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    padding_side: str = "right",
):
    """Load a scalar reward model (sequence classification, one label) and its fixed tokenizer.

    From an SFT checkpoint (InstructGPT initialises the reward model from the SFT model) the ``score``
    head is new and randomly initialised; from a trained reward model it is loaded. ``pad_token_id`` is
    set in the config so the score is read at the last real token.
    """
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_tokenizer(name_or_path, padding_side, trust_remote_code, revision)
    # transformers warns with a table of every weight it did not find; from an SFT checkpoint that is the new score
    # head, as intended: that goes to the log, and anything else it reports is still a warning.
    report = logging.getLogger("transformers.modeling_utils")
    level = report.level
    report.setLevel(logging.ERROR)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(name_or_path),
            num_labels=1,
            output_loading_info=True,
            **_model_kwargs(preset, hardware, trust_remote_code, revision),
        )
    finally:
        report.setLevel(level)
    base = f"{model.base_model_prefix}."
    head = sorted(k for k in info["missing_keys"] if not k.startswith(base))
    amiss = {
        "missing": sorted(k for k in info["missing_keys"] if k.startswith(base)),
        "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": sorted(map(str, info["mismatched_keys"])),
    }
    if any(amiss.values()):
        logger.warning("reward model %s: weights %s", name_or_path, {k: v for k, v in amiss.items() if v})
    if head:
        logger.info("reward model %s: new score head %s, initialised at random", name_or_path, head)
    sync_model_with_tokenizer(model, tokenizer)
    return model, tokenizer


def save_final(trainer, tokenizer, output_dir: str | os.PathLike, *, base_model: str, model_kind: str) -> Path:
    """Save the trained model to ``<output_dir>/model`` atomically, merging a LoRA adapter if there is one.

    ``model_kind`` is ``causal`` or ``reward``: the class used to reload an unquantised base for merging.
    Only the main process writes; the others wait for it.
    """
    from peft import PeftModel

    out = Path(output_dir) / MODEL_SUBDIR
    model = trainer.accelerator.unwrap_model(trainer.model)
    state = trainer.accelerator
    if state.is_main_process:
        if isinstance(model, PeftModel):
            with atomic_path(Path(output_dir) / ADAPTER_SUBDIR) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
            merged = merge_adapter(Path(output_dir) / ADAPTER_SUBDIR, base_model, tokenizer, model_kind)
        else:
            merged = model
        with atomic_path(out) as tmp:
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    state.wait_for_everyone()
    return out


def copy_model(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """``target`` becomes a copy of the model ``source``, atomically: a local folder as hard links (no extra disk; a
    target already made of the same files is kept), a hub id as its causal LM and tokenizer saved (safetensors). What
    an RL run returns when that is a model it did not train: the starting policy after a stop before any healthy
    checkpoint, best-of-N's last healthy round."""
    source, target = Path(source), Path(target)
    if source.is_dir() and (source == target or target.exists() and _same_files(source, target)):
        return target
    with atomic_path(target) as tmp:
        if source.is_dir():
            shutil.copytree(source, tmp, copy_function=os.link)
        else:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            AutoModelForCausalLM.from_pretrained(str(source), dtype="auto").save_pretrained(
                tmp, safe_serialization=True
            )
            AutoTokenizer.from_pretrained(str(source)).save_pretrained(tmp)
    return target


def _same_files(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        os.path.samefile(a / f, b / f) for f in files
    )


def merge_adapter(adapter_dir: str | os.PathLike, base_model: str, tokenizer, model_kind: str = "causal"):
    """Load the base unquantised (compute dtype), apply the adapter, and merge it into the weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForCausalLM if model_kind == "causal" else AutoModelForSequenceClassification
    extra = {"num_labels": 1} if model_kind == "reward" else {}
    base = cls.from_pretrained(base_model, dtype=compute_dtype(), **extra)
    sync_model_with_tokenizer(base, tokenizer)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
