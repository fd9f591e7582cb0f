"""rlhfkit.rl.ppo.rollout: the typed data of one PPO update and the prompt / padding helpers, on hand-made inputs."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from datasets import Dataset

from rlhfkit.core.errors import ConfigError
from rlhfkit.rl.ppo.rollout import (
    Advantages,
    Rollout,
    append_after_stop,
    chat_suffix_ids,
    forward_inputs,
    is_chat,
    left_pad,
    tokenize_prompts,
)
from tests.rl.ppo.test_trainer import make_tokenizer

PAD = 1


@pytest.mark.parametrize("cls", [Rollout, Advantages])
def test_docstring_gives_every_field_a_shape(cls):
    """The docstring is the contract: each field is documented once, with its shape (or its list length)."""
    documented = re.findall(r"^        (\w+) \(`[^`]+` (?:of shape|of length) `\(?[BPR, ]*\)?`", cls.__doc__, re.M)
    assert documented == [f.name for f in dataclasses.fields(cls)]


def test_left_pad_puts_padding_before_each_sequence():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], PAD, "cpu")
    assert ids.tolist() == [[5, 6, 7], [PAD, PAD, 8], [PAD, 9, 10]]
    assert mask.tolist() == [[True, True, True], [False, False, True], [False, True, True]]
    assert ids.dtype == torch.long and mask.dtype == torch.bool


def test_forward_inputs_count_positions_over_real_tokens_only():
    queries, query_mask = left_pad([[5, 6], [7]], PAD, "cpu")
    responses = torch.tensor([[8, 0, PAD], [9, PAD, PAD]])
    response_mask = torch.tensor([[True, True, False], [True, False, False]])
    inputs = forward_inputs(queries, query_mask, responses, response_mask)
    assert inputs["input_ids"].tolist() == [[5, 6, 8, 0, PAD], [PAD, 7, 9, PAD, PAD]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [0, 1, 1, 0, 0]]
    assert inputs["attention_mask"].dtype == torch.long
    # the left-padded prompt starts at position 0; padding repeats the last real position (it is masked anyway)
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 3], [0, 0, 1, 1, 1]]


def test_append_after_stop_extends_only_the_answers_that_stopped():
    stop, suffix = 0, [30, 31]
    responses = torch.tensor([[5, 0, PAD], [5, 6, 7], [0, PAD, PAD], [5, 9, PAD]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    responses[3, 2] = 0  # a stop token the mask says is padding: not an ending, and written as padding
    ext, new_mask = append_after_stop(responses, mask, stop, suffix, PAD)
    assert ext.tolist() == [
        [5, 0, 30, 31, PAD],
        [5, 6, 7, PAD, PAD],
        [0, 30, 31, PAD, PAD],
        [5, 9, PAD, PAD, PAD],
    ]
    assert new_mask.sum(1).tolist() == [4, 3, 3, 2]
    assert new_mask.tolist() == [[i < n for i in range(5)] for n in (4, 3, 3, 2)]


def test_tokenize_prompts_reads_texts_token_ids_and_chat_messages():
    tok = make_tokenizer()
    ids, texts = tokenize_prompts(["Q: say w1 A:", "say w2"], tok)
    assert texts == ["Q: say w1 A:", "say w2"]
    assert ids == [tok("Q: say w1 A:")["input_ids"], tok("say w2")["input_ids"]] and ids[1] == [33, 4]

    ids, texts = tokenize_prompts(Dataset.from_dict({"input_ids": [[33, 5], [32, 4]]}), tok)
    assert ids == [[33, 5], [32, 4]] and texts == ["say w3", "Q: w2"]

    tok.chat_template = "{% for m in messages %}{{ 'Q: ' + m['content'] + ' A:' }}{% endfor %}"
    chat = Dataset.from_list([{"prompt": [{"role": "user", "content": "say w1"}]}])
    assert is_chat(chat) and not is_chat(["say w1"]) and not is_chat(Dataset.from_dict({"input_ids": [[5]]}))
    ids, texts = tokenize_prompts(chat, tok)
    assert texts == ["Q: say w1 A:"] and ids == [tok("Q: say w1 A:")["input_ids"]]


def test_tokenize_prompts_errors_name_the_columns_and_the_fix():
    tok = make_tokenizer()
    with pytest.raises(ConfigError, match=r"columns \['text'\]; it needs a 'prompt' or 'input_ids' column"):
        tokenize_prompts(Dataset.from_dict({"text": ["say w1"]}), tok)
    with pytest.raises(ConfigError, match="empty prompt; remove it"):
        tokenize_prompts(["say w1", ""], tok)


def test_chat_suffix_ids_are_the_template_tokens_after_the_answer_eos():
    tok = make_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['content'] + ' <eos> say' }}{% endfor %}"  # Qwen: "\n"
    assert chat_suffix_ids(tok) == tok.convert_tokens_to_ids(["say"])
    tok.chat_template = "{% for m in messages %}{{ m['content'] + ' <eos>' }}{% endfor %}"  # Llama 3: nothing
    assert chat_suffix_ids(tok) == []
