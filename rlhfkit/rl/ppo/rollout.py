"""What one PPO update passes from step to step, and the prompt / padding helpers that build it.

:class:`Rollout` is what :meth:`PPOTrainer._rollout` samples and scores, :class:`Advantages` what
:meth:`PPOTrainer._advantages` derives from it; the PPO epochs and the logged metrics read both. Shapes use
``B`` = this process's prompts per update (``per_device_train_batch_size * gradient_accumulation_steps``),
``P`` = the longest prompt of the batch (left-padded) and ``R`` = the longest response (right-padded, at most
``response_length``).

The helpers turn a ``train_dataset`` into token ids (:func:`tokenize_prompts`), pad them (:func:`left_pad`),
build the forward inputs of prompt + response (:func:`forward_inputs`), fix the sampling distribution
(:func:`sampling_config`) and append a chat template's tokens after the EOS where the reward model was trained to
read its score (:func:`chat_suffix_ids`, :func:`append_after_stop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig

from rlhfkit.core.errors import ConfigError


@dataclass(frozen=True)
class Rollout:
    """One update's samples on this process, with everything the PPO epochs hold fixed.

    Args:
        queries (`torch.LongTensor` of shape `(B, P)`): prompt token ids, left-padded with the pad token.
        query_mask (`torch.BoolTensor` of shape `(B, P)`): True at real prompt tokens.
        responses (`torch.LongTensor` of shape `(B, R)`): sampled token ids, cut after the stop token and
            right-padded with the pad token.
        mask (`torch.BoolTensor` of shape `(B, R)`): True at real response tokens (the stop token included).
        logprobs (`torch.FloatTensor` of shape `(B, R)`, float32): the policy's log-probability of each response
            token at ``temperature`` when sampled (the old log-probs of PPO's ratio).
        ref_logprobs (`torch.FloatTensor` of shape `(B, R)`, float32): the same under the reference model.
        values (`torch.FloatTensor` of shape `(B, R)`, float32): the value model's estimate before each response
            token (the old values of the clipped value loss).
        raw_scores (`torch.FloatTensor` of shape `(B,)`, float32): the reward model's (or reward function's)
            score of each whole answer, before normalisation and the missing-EOS penalty.
        prompts (`list[str]` of length `B`): the prompt texts (chat prompts as rendered by the chat template).
        completions (`list[str]` of length `B`): the decoded responses, special tokens skipped.
    """

    queries: torch.Tensor
    query_mask: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    raw_scores: torch.Tensor
    prompts: list[str]
    completions: list[str]

    def completion_ids(self) -> list[list[int]]:
        """Each response's real token ids (padding dropped), as a reward function's ``completion_ids``."""
        return [r[m].tolist() for r, m in zip(self.responses.cpu(), self.mask.cpu())]


@dataclass(frozen=True)
class Advantages:
    """What the rollout's scores, log-probs and values become before the PPO epochs (float32; per-token tensors are 0
    where the rollout's ``mask`` is False).

    Args:
        scores (`torch.FloatTensor` of shape `(B,)`): the score the policy is optimised for: ``raw_scores``
            normalised with ``reward_mean`` / ``reward_std`` (when set), minus ``missing_eos_penalty`` for answers
            without an EOS.
        kl (`torch.FloatTensor` of shape `(B, R)`): per-token KL estimate (``kl_estimator``) of policy to reference.
        non_score (`torch.FloatTensor` of shape `(B, R)`): the KL penalty, ``-kl_coef * kl``.
        advantages (`torch.FloatTensor` of shape `(B, R)`): GAE advantages, whitened over the real tokens.
        returns (`torch.FloatTensor` of shape `(B, R)`): the value targets, GAE advantages (unwhitened) + values.
    """

    scores: torch.Tensor
    kl: torch.Tensor
    non_score: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


# ============================================================================================== prompts
def tokenize_prompts(dataset, tokenizer) -> tuple[list[list[int]], list[str]]:
    """Prompts -> (token ids, texts). Accepts a list of strings or a Dataset with ``prompt`` or ``input_ids``."""
    if isinstance(dataset, (list, tuple)):
        rows: Sequence = [{"prompt": p} for p in dataset]
        columns = {"prompt"}
    else:
        rows, columns = dataset, set(dataset.column_names)
    if "input_ids" in columns:
        ids = [list(r["input_ids"]) for r in rows]
        return ids, tokenizer.batch_decode(ids, skip_special_tokens=True)
    if "prompt" not in columns:
        raise ConfigError(f"train_dataset has columns {sorted(columns)}; it needs a 'prompt' or 'input_ids' column")
    ids, texts = [], []
    for r in rows:
        prompt = r["prompt"]
        if isinstance(prompt, str):
            texts.append(prompt)
            ids.append(tokenizer(prompt)["input_ids"])
        else:  # chat messages
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            texts.append(text)
            ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    if any(len(i) == 0 for i in ids):
        raise ConfigError("train_dataset has an empty prompt; remove it (PPO needs at least one prompt token)")
    return ids, texts


def is_chat(dataset) -> bool:
    """Whether the prompts are chat messages (lists of role/content dicts) rather than text or token ids."""
    if isinstance(dataset, (list, tuple)):
        first = dataset[0] if dataset else ""
    else:
        first = dataset[0]["prompt"] if "prompt" in dataset.column_names and len(dataset) else ""
    return not isinstance(first, str)


def chat_suffix_ids(tokenizer) -> list[int]:
    """Token ids the chat template puts after the EOS that ends an assistant turn (Qwen: "\n"; Llama 3: none)."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    end = rendered.rfind(tokenizer.eos_token) if tokenizer.eos_token else -1
    suffix = rendered[end + len(tokenizer.eos_token) :] if end >= 0 else ""
    return list(tokenizer(suffix, add_special_tokens=False)["input_ids"]) if suffix else []


# ============================================================================================== tensors
def left_pad(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids `(N, L)` long, mask `(N, L)` bool), left-padded with ``pad`` to the longest."""
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, L - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, L - len(s) :] = True
    return ids.to(device), mask.to(device)


def forward_inputs(queries, query_mask, responses, response_mask) -> dict[str, torch.Tensor]:
    """Model inputs for prompt + response: ``input_ids`` `(B, P + R)`, ``attention_mask`` (long) and
    ``position_ids`` that count real tokens only, so a left-padded prompt starts at position 0."""
    input_ids = torch.cat([queries, responses], 1)
    attention_mask = torch.cat([query_mask, response_mask], 1).long()
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}


def append_after_stop(responses, mask, stop_token_id, suffix: list[int], pad: int):
    """Right-padded ``responses`` `(B, R)` with ``suffix`` appended to the rows that end with the stop token.

    Returns:
        (responses `(B, R + len(suffix))`, mask `(B, R + len(suffix))` bool), padding written as ``pad``.
    """
    lengths = mask.sum(1)
    ended = (lengths > 0) & (responses.gather(1, (lengths - 1).clamp(min=0)[:, None])[:, 0] == stop_token_id)
    ext = nn.functional.pad(responses.masked_fill(~mask, pad), (0, len(suffix)), value=pad)
    positions = lengths[:, None] + torch.arange(len(suffix), device=responses.device)[None]
    rows = ended.nonzero()[:, 0]
    ext[rows[:, None], positions[rows]] = torch.tensor(suffix, device=responses.device)
    new_lengths = lengths + ended.long() * len(suffix)
    new_mask = torch.arange(ext.shape[1], device=responses.device)[None] < new_lengths[:, None]
    return ext, new_mask


# ============================================================================================== sampling
def sampling_config(args, stop_token_id: int | None, pad_token_id: int) -> GenerationConfig:
    """Sample ``args.response_length`` tokens at ``args.temperature`` from the unmodified distribution."""
    return GenerationConfig(
        max_new_tokens=args.response_length,
        do_sample=True,
        temperature=args.temperature + 1e-7,
        # Set every knob that reshapes the sampling distribution: unset ones are filled from the model's own
        # generation_config (e.g. Qwen's top_k=20, repetition_penalty=1.05) and log-probs would then be wrong.
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        typical_p=1.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        min_new_tokens=0,
        eos_token_id=stop_token_id if stop_token_id is not None else [],  # []: never stop early
        pad_token_id=pad_token_id,
    )
