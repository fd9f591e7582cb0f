"""scoring: RewardTrainer-identical formatting, batched == one-at-a-time scores on both padding sides (the attention
mask left out only where it cannot matter), and every RL scorer (GRPO's, PPO's through another tokenizer) equal to
:func:`score_texts` on the same texts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rlhfkit import lab
from rlhfkit.models.loading import load_reward_model, load_tokenizer
from rlhfkit.models.scoring import (
    RewardModelScorer,
    attends_only_to_the_past,
    encode,
    score_texts,
    score_token_ids,
    tokenize_pair,
)

ROWS = [
    {"prompt": "Q: List 3 fruits.\nA:", "chosen": " apple, pear, plum.", "rejected": " apple."},
    {"prompt": "Q: Name 2 colours.\nA:", "chosen": " red, blue.", "rejected": " red, blue, green, red, blue, pink."},
    {"prompt": "Q: List 1 animal.\nA:", "chosen": " cat.", "rejected": " dog, dog."},
]
CHAT_ROWS = [
    {
        "prompt": [{"role": "user", "content": r["prompt"][3:-3]}],
        "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
    }
    for r in ROWS
]
TEXTS = [r["prompt"] + r[k] for r in ROWS for k in ("chosen", "rejected")]
CHATS = [r["prompt"] + r[k] for r in CHAT_ROWS for k in ("chosen", "rejected")]


@pytest.fixture(scope="module")
def reward(nano_model):
    """A nano sequence-classification reward model with a fixed (random) score head, and its tokenizer."""
    torch.manual_seed(0)
    return load_reward_model(nano_model)


def one_at_a_time(model, ids: list[list[int]]) -> np.ndarray:
    """The reference: each sequence alone, no padding, no mask (the tutorial loop)."""
    with torch.inference_mode():
        return np.array([model(input_ids=torch.tensor([s])).logits[0, 0].item() for s in ids])


def with_bos(tokenizer):
    """The tokenizer made to add a BOS token (as Llama tokenizers do): other ids for the same text."""
    from tokenizers import processors

    bos = tokenizer.eos_token
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.eos_token_id)]
    )
    return tokenizer


# ----------------------------------------------------------------------------- formatting
def test_token_ids_equal_reward_trainers_preprocessing(reward, tmp_path):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from rlhfkit.core.hardware import precision_kwargs

    model, tokenizer = copy.deepcopy(reward[0]), reward[1]
    args = RewardConfig(output_dir=str(tmp_path), report_to=[], max_length=None, **precision_kwargs())
    trainer = RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=Dataset.from_list(ROWS))
    for rows, prepared in (
        (ROWS, trainer.train_dataset),
        (CHAT_ROWS, trainer._prepare_dataset(Dataset.from_list(CHAT_ROWS), tokenizer, args, "chat")),
    ):
        for row, expected in zip(rows, prepared):
            chosen, rejected = tokenize_pair(tokenizer, row)
            assert chosen == expected["chosen_ids"] and rejected == expected["rejected_ids"]
    assert tokenize_pair(tokenizer, ROWS[0])[0][-1] == tokenizer.eos_token_id  # EOS appended to strings
    assert encode(tokenizer, TEXTS[0], eos=False) == encode(tokenizer, TEXTS[0])[:-1]  # a cut-off PPO answer


# ----------------------------------------------------------------------------- batched == one at a time
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_batched_scores_equal_one_at_a_time_on_text_and_chat_rows(reward, padding_side):
    model, tokenizer = reward
    texts = TEXTS + CHATS
    ids = [encode(tokenizer, t) for t in texts]
    assert len({len(s) for s in ids}) == 4  # 12 sequences of 4 lengths: batches are padded
    expected = one_at_a_time(model, ids)
    assert np.ptp(expected) > 0  # scores differ, so the order restored after length sorting matters
    for batch_size in (1, 3, len(texts)):  # one per batch; length buckets; everything in one padded batch
        got = score_texts(model, tokenizer, texts, batch_size=batch_size, padding_side=padding_side)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="padding_side"):
        score_token_ids(model, [[1, 2]], pad_token_id=0, padding_side="middle")


def _passed_masks(model, ids, **kwargs) -> list[bool]:
    """Whether each forward pass of :func:`score_token_ids` got an attention mask."""
    seen = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kw: seen.append(kw.get("attention_mask") is not None), with_kwargs=True
    )
    try:
        score_token_ids(model, ids, **kwargs)
    finally:
        handle.remove()
    return seen


def test_the_mask_is_left_out_only_where_it_cannot_change_a_score(reward):
    model, tokenizer = reward
    pad = tokenizer.pad_token_id
    ids = [[5, 6, 7, 8], [5, 6, 7, 8], [5, 6], [9, 10, 11]]  # batch_size 2: lengths (4, 4) unpadded, then (3, 2)
    assert attends_only_to_the_past(model)
    # right padding of a causal model: no mask (SDPA keeps its causal kernel); pads come after every real token
    assert _passed_masks(model, ids, pad_token_id=pad, batch_size=2) == [False, False]
    assert _passed_masks(model, ids, pad_token_id=pad, batch_size=4) == [False]
    # left padding: the pads come first, so a padded batch needs the mask; an unpadded one never does
    assert _passed_masks(model, ids, pad_token_id=pad, batch_size=2, padding_side="left") == [False, True]
    assert _passed_masks(model, ids, pad_token_id=pad, batch_size=4, padding_side="left") == [True]


def test_a_bidirectional_model_keeps_its_mask():
    """An encoder (BERT pools its first token, so only right padding applies) is scored with the padding mask."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
        initializer_range=0.5,  # large random weights: scores far apart
    )
    bert = BertForSequenceClassification(config).eval()
    assert not attends_only_to_the_past(bert)
    ids = [[2, 5, 6, 7, 8, 9, 3], [2, 5, 3], [2, 11, 12, 3], [2, 13, 14, 15, 16, 3]]
    expected = one_at_a_time(bert, ids)
    got = score_token_ids(bert, ids, pad_token_id=config.pad_token_id, batch_size=4)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with torch.inference_mode():  # the test has teeth: unmasked right padding changes a bidirectional model's score
        unmasked = bert(input_ids=torch.tensor([ids[1] + [config.pad_token_id] * 4])).logits[0, 0].item()
    assert abs(unmasked - expected[1]) > 1e-3


# ----------------------------------------------------------------------------- the RL scorers
@pytest.mark.parametrize("rows", [ROWS, CHAT_ROWS], ids=["text", "chat"])
def test_grpo_scorer_equals_score_texts(reward, rows):
    model, tokenizer = reward
    prompts = [r["prompt"] for r in rows for _ in range(2)]
    completions = [r[k] for r in rows for k in ("chosen", "rejected")]
    expected = score_texts(model, tokenizer, [p + c for p, c in zip(prompts, completions)], batch_size=1)
    np.testing.assert_allclose(
        RewardModelScorer(model, tokenizer, batch_size=4)(prompts, completions), expected, atol=1e-5
    )


def test_ppo_external_scores_equal_score_texts(nano_model, reward, tmp_path):
    """A reward model with its own tokenizer (here one that adds a BOS): PPO decodes, re-tokenises, and scores
    ``prompt + completion`` as :func:`score_texts` does; an answer cut off before its EOS gets no EOS."""
    from transformers import AutoModelForCausalLM

    from rlhfkit.rl.ppo.config import PPOConfig
    from rlhfkit.rl.ppo.trainer import PPOTrainer

    policy_tok = load_tokenizer(nano_model)
    reward_tok = with_bos(load_tokenizer(nano_model))
    rm = copy.deepcopy(reward[0]).requires_grad_(False)
    policy = AutoModelForCausalLM.from_pretrained(nano_model)
    prompts = lab.make_prompts(4, seed=0)
    args = PPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_mini_batches=1,
        total_episodes=4,
        report_to="none",
        save_strategy="no",
        num_sample_generations=0,
        stop_token="eos",  # an answer ends at the policy's EOS
    )
    trainer = PPOTrainer(
        args,
        policy_tok,
        policy,
        copy.deepcopy(policy).requires_grad_(False),
        rm,
        prompts,
        value_model=copy.deepcopy(rm).requires_grad_(True),
        reward_processing_class=reward_tok,
    )
    completions = [" apple, pear.", " cat.", " red, blue, green.", " dog"]
    ended = [True, True, False, False]
    answers = [policy_tok(c, add_special_tokens=False)["input_ids"] for c in completions]
    answers = [a + [policy_tok.eos_token_id] * e for a, e in zip(answers, ended)]
    width = max(len(a) for a in answers)
    responses = torch.tensor([a + [policy_tok.pad_token_id] * (width - len(a)) for a in answers])
    mask = torch.tensor([[j < len(a) for j in range(width)] for a in answers])
    got = trainer._external_scores(prompts, completions, responses, mask).numpy()

    texts = [p + c for p, c in zip(prompts, completions)]
    assert encode(reward_tok, texts[0])[0] == reward_tok.eos_token_id != encode(policy_tok, texts[0])[0]  # BOS
    np.testing.assert_allclose(got[:2], score_texts(rm, reward_tok, texts[:2], batch_size=1), atol=1e-5)
    cut = one_at_a_time(rm, [reward_tok(t)["input_ids"] for t in texts[2:]])  # scored where the answer stops
    np.testing.assert_allclose(got[2:], cut, atol=1e-5)
