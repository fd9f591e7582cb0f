"""A judge for the lab: a tiny causal LM taught the lab's gold preferences in the judge's own prompt format, so RLAIF
is measured on the lab (accuracy against gold, position bias, the policy it trains), not argued.

    build_judge("runs/lab-judge", n_train=4000)                                  # ~1 CPU minute
    judge_file("comparisons.jsonl", "votes.jsonl", model="runs/lab-judge")      # rlhfkit label ... --judge

It is an ordinary model folder (Llama architecture, the lab's byte-level BPE tokenizer also trained on judging
prompts, :data:`rlhfkit.lab.TINY_SIZES` ``judge``), judged through the same code path as any judge
(:mod:`rlhfkit.feedback.judge`). It lives here rather than in :mod:`rlhfkit.lab` because it is written in the judge's
prompt format, which the lab's floor cannot import.

Training data: ``n_train`` lab comparisons (a prompt of :func:`rlhfkit.lab.make_prompts`, two distinct candidates of
:func:`rlhfkit.lab.candidates` with different gold rewards), each shown in both orders under a principle drawn from
the constitution. The answer taught for each shown order is decided like a :class:`rlhfkit.lab.LabelerPool` labeler:

1. with probability ``position_bias``: ``1``, the response shown first, whatever it is;
2. else, with probability ``length_bias`` and when the item counts differ: the longer response;
3. else the response with the higher gold reward, flipped with probability ``label_noise``.

Training: AdamW, cosine schedule, 16 comparisons x 2 orders per step, cross-entropy of the answer token over the
whole vocabulary (SFT on a one-token completion) plus :data:`LM_WEIGHT` x the language-modelling loss of the
judging prompt (a from-scratch model learns the lab's words from it). Showing both orders of a comparison in one
batch teaches an unbiased judge that the answer follows the responses, not the positions.

Deliberately simple: no pre-training, no held-out early stopping; competence is set by ``n_train``, ``steps`` and
``label_noise`` (``docs/feedback.md`` has the measured accuracies).
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Sequence
from pathlib import Path

from rlhfkit import lab
from rlhfkit.core.errors import ConfigError
from rlhfkit.core.io import atomic_path
from rlhfkit.feedback.judge import ANSWERS, answer_token_ids, judging_messages, load_constitution

LM_WEIGHT = 0.5  # the judging prompt's language-modelling loss, beside the answer's: ~+3 points of accuracy
PAIRS_PER_STEP = 16  # comparisons per step, each in both orders: 32 sequences
TOKENIZER_PROMPTS = 500  # judging prompts added to the tokenizer's corpus (principles and layout become few tokens)


def training_examples(
    n_train: int,
    principles,
    *,
    label_noise: float = 0.0,
    position_bias: float = 0.0,
    length_bias: float = 0.0,
    seed: int = 0,
) -> list[tuple[list[dict], int]]:
    """``2 * n_train`` examples ``(judging messages, answer index)``: each comparison in both orders, consecutive;
    answer 0 means ``1`` (the response shown first). The rules are in the module docstring."""
    for name, value in (("label_noise", label_noise), ("position_bias", position_bias), ("length_bias", length_bias)):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value!r} must be a probability in [0, 1]")
    if n_train < 1:
        raise ConfigError(f"n_train={n_train!r} must be >= 1 comparison")
    rng = random.Random(seed)
    examples: list[tuple[list[dict], int]] = []
    while len(examples) < 2 * n_train:
        prompt = lab.make_prompts(1, seed=rng.randrange(2**31))[0]
        a, b = lab.candidates(prompt, 2, rng)
        gold_a, gold_b = lab.gold_reward(prompt, a), lab.gold_reward(prompt, b)
        if a == b or gold_a == gold_b:
            continue
        principle = rng.choice(principles).text
        for first, second, gold_first, gold_second in ((a, b, gold_a, gold_b), (b, a, gold_b, gold_a)):
            len_first, len_second = lab.count_items(first), lab.count_items(second)
            if rng.random() < position_bias:
                answer = 0
            elif len_first != len_second and rng.random() < length_bias:
                answer = 0 if len_first > len_second else 1
            else:
                answer = 0 if gold_first > gold_second else 1
                if rng.random() < label_noise:
                    answer = 1 - answer
            examples.append((judging_messages(principle, prompt, first, second), answer))
    return examples


def build_judge(
    path: str | os.PathLike,
    *,
    n_train: int = 4000,
    label_noise: float = 0.0,
    position_bias: float = 0.0,
    length_bias: float = 0.0,
    seed: int = 0,
    steps: int = 800,
    learning_rate: float = 1e-3,
    constitution: str | os.PathLike | None = None,
) -> Path:
    """Train a lab judge and save it at ``path`` (a model folder, written atomically, plus ``lab_judge.json`` with
    these settings). Deterministic under ``seed`` on one thread.

    Args:
        n_train: comparisons taught (each in both orders); with ``steps`` and ``label_noise``, its competence.
        label_noise: probability that a taught answer is flipped.
        position_bias: probability that the taught answer is the response shown first, whatever it is.
        length_bias: probability that the taught answer is the longer response (when the lengths differ).
        steps: optimiser steps of :data:`PAIRS_PER_STEP` comparisons in both orders.
        constitution: the principles its prompts are written under (None: the judge's default constitution).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhfkit.models.sampling import encode_prompts

    if steps < 1:
        raise ConfigError(f"steps={steps!r} must be >= 1")
    principles = load_constitution(constitution)
    knobs = dict(label_noise=label_noise, position_bias=position_bias, length_bias=length_bias, seed=seed)
    examples = training_examples(n_train, principles, **knobs)
    corpus = [m[0]["content"] for m, _ in examples[: 2 * TOKENIZER_PROMPTS : 2]]
    with atomic_path(path) as tmp:
        lab.build_tiny_model(tmp, size="judge", seed=seed, corpus=corpus)
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        answer_ids = answer_token_ids(tokenizer, ANSWERS, "lab judge")
        ids = encode_prompts(tokenizer, [m for m, _ in examples])
        targets = torch.tensor([answer_ids[a] for _, a in examples])
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tmp)
        loss = _train(model, ids, targets, tokenizer.pad_token_id, steps=steps, learning_rate=learning_rate, seed=seed)
        model.save_pretrained(tmp)
        settings = dict(n_train=n_train, steps=steps, learning_rate=learning_rate, **knobs, final_loss=loss)
        (Path(tmp) / "lab_judge.json").write_text(json.dumps(settings, indent=2) + "\n")
    return Path(path)


def _batch(ids: Sequence[Sequence[int]], rows: list[int], pad_token_id: int):
    """Left-padded ids, mask and position ids of ``rows`` (as the judge scores them)."""
    import torch

    width = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for n, r in enumerate(rows):
        input_ids[n, width - len(ids[r]) :] = torch.as_tensor(ids[r], dtype=torch.long)
        mask[n, width - len(ids[r]) :] = 1
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _train(model, ids, targets, pad_token_id: int, *, steps: int, learning_rate: float, seed: int) -> float:
    """The training loop (module docstring); returns the mean loss of the last 50 steps."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    warmup = min(50, steps // 10 + 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    n_pairs = len(ids) // 2
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        pairs = torch.randint(n_pairs, (min(PAIRS_PER_STEP, n_pairs),), generator=generator).tolist()
        rows = [2 * p for p in pairs] + [2 * p + 1 for p in pairs]  # both orders of each comparison
        input_ids, mask, positions = _batch(ids, rows, pad_token_id)
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
        loss = F.cross_entropy(logits[:, -1].float(), targets[rows])
        text_targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        lm = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), text_targets.flatten(), ignore_index=-100)
        (loss + LM_WEIGHT * lm).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return float(sum(losses[-50:]) / len(losses[-50:]))
