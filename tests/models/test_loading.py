import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit.core.errors import ConfigError
from rlhfkit.lab import build_tiny_model
from rlhfkit.models.loading import (
    DEFAULT_CHAT_TEMPLATE,
    copy_model,
    load_policy,
    load_reward_model,
    load_tokenizer,
    prepare_tokenizer,
    sync_model_with_tokenizer,
)


@pytest.fixture(scope="module")
def bare_model(tmp_path_factory):
    """A lab model whose tokenizer lacks a pad token and a chat template, like many hub tokenizers."""
    return build_tiny_model(tmp_path_factory.mktemp("bare") / "m", "nano", pad_token=False, chat_template=False)


def test_tokenizer_fixes_on_a_bare_tokenizer(bare_model):
    tok = AutoTokenizer.from_pretrained(bare_model)
    assert tok.pad_token is None and not tok.chat_template
    n = len(tok)
    prepare_tokenizer(tok, padding_side="left")
    assert tok.pad_token is not None and tok.pad_token_id != tok.eos_token_id
    assert len(tok) == n + 1 and tok.padding_side == "left"
    assert tok.chat_template == DEFAULT_CHAT_TEMPLATE
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], tokenize=False
    )
    assert text == "Human: Hi\n\nAssistant: Hello.<|endoftext|>\n\n"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "Human: Hi\n\nAssistant:"


def test_pad_equal_to_eos_is_replaced(bare_model):
    tok = AutoTokenizer.from_pretrained(bare_model)
    tok.pad_token = tok.eos_token
    prepare_tokenizer(tok)
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "right"


def test_existing_template_and_pad_are_kept(nano_model):
    tok = AutoTokenizer.from_pretrained(nano_model)
    template, pad, n = tok.chat_template, tok.pad_token_id, len(tok)
    prepare_tokenizer(tok)
    assert tok.chat_template == template and tok.pad_token_id == pad and len(tok) == n


def test_missing_eos_is_a_clear_error(bare_model):
    tok = AutoTokenizer.from_pretrained(bare_model)
    tok.eos_token = None
    with pytest.raises(ConfigError, match="no EOS token"):
        prepare_tokenizer(tok)
    with pytest.raises(ConfigError, match="padding_side"):
        prepare_tokenizer(AutoTokenizer.from_pretrained(bare_model), padding_side="middle")


def test_embeddings_resized_for_added_pad(bare_model):
    model = AutoModelForCausalLM.from_pretrained(bare_model)
    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(bare_model))
    sync_model_with_tokenizer(model, tok)
    assert model.get_input_embeddings().weight.shape[0] >= len(tok)
    assert model.config.pad_token_id == tok.pad_token_id == model.generation_config.pad_token_id
    ids = tok(["Q: List 2 fruits.\nA:", "Q: Hi"], padding=True, return_tensors="pt")
    assert (ids.input_ids == tok.pad_token_id).any()
    model(**ids)  # the new pad id indexes a real embedding row


def test_load_policy_from_local_folder(bare_model, cpu_only):
    model, tok = load_policy(bare_model)
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id and model.dtype == torch.float32


def test_load_reward_model_has_one_label_and_pad(nano_model):
    model, tok = load_reward_model(nano_model)
    assert model.config.num_labels == 1 and model.config.pad_token_id == tok.pad_token_id
    out = model(**tok(["Q: List 1 fruits.\nA: apple."], return_tensors="pt"))
    assert out.logits.shape == (1, 1)


def test_trust_remote_code_is_off_by_default():
    import inspect

    for fn in (load_policy, load_reward_model, load_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False


def test_missing_local_path_is_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope" / "model")


def test_qlora_loads_4bit_on_cpu_and_lora_backward_runs(nano_model):
    import bitsandbytes as bnb
    from peft import get_peft_model, prepare_model_for_kbit_training

    from rlhfkit.core.presets import method_preset

    preset = method_preset("qlora")
    model, tok = load_policy(nano_model, preset)
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    model = get_peft_model(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), preset.lora)
    batch = tok(["Q: List 3 fruits.\nA: apple, pear, plum."], return_tensors="pt")
    loss = model(**batch, labels=batch.input_ids).loss
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    assert all(p.grad is not None for _, p in trainable)
    # lora_B starts at zero, so only B gets a non-zero gradient on the first step
    assert all(p.grad.abs().sum() > 0 for n, p in trainable if "lora_B" in n)


def test_copy_model_hard_links_a_local_folder_atomically(nano_model, tmp_path):
    target = copy_model(nano_model, tmp_path / "run" / "model")
    files = sorted(p.relative_to(nano_model) for p in nano_model.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file())
    assert all((target / f).samefile(nano_model / f) for f in files)  # no extra disk
    inode = (target / "config.json").stat().st_ino
    assert copy_model(nano_model, target) == target and (target / "config.json").stat().st_ino == inode  # kept
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != "model"]  # no temp folder left
    assert AutoModelForCausalLM.from_pretrained(target) is not None
