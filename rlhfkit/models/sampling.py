"""Sampling a policy and measuring how far it moved from a reference: the one KL every algorithm is judged by.

* :func:`generate` / :func:`generate_ids`: sampled responses with their token ids, so that what was sampled can be
  scored exactly (no decode / re-encode round trip): top_k 0, top_p 1 by default (the policy RL optimised; ``top_p``
  < 1 samples the nucleus, as ``rlhfkit sample`` may), ``temperature`` 0 for greedy decoding, left padding, chat
  prompts rendered with the generation prompt, one seed per call. The one sampling loop:
  :func:`rlhfkit.models.scoring.sample_responses` returns its texts, :mod:`rlhfkit.feedback.sample` its comparisons.
* :func:`sequence_logprobs`: ``log p(response | prompt)`` summed over the response's tokens, at a temperature.
* :func:`sequence_kl`: KL(policy || reference) in **nats per sequence**, estimated on the policy's own samples as
  ``mean(log pi(y|x) - log pi_ref(y|x))`` (an unbiased Monte-Carlo estimate; PPO's ``objective/kl`` is the same
  quantity on its rollouts). ``rlhfkit compare`` and the pipeline's final evaluation measure every algorithm with it,
  on the same held-out prompts, so PPO, GRPO, RLOO, DPO and rejection sampling sit on one KL axis.

Temperature: the KL is between the *sampling* distributions, ``softmax(logits / T)`` of both models, as PPO measures
it; at ``T = 1`` that is the models' own KL. A response that ends with EOS includes the EOS token (stopping is part of
the sequence); one cut at ``max_new_tokens`` is scored as far as it goes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlhfkit.core.errors import ConfigError
from rlhfkit.core.hardware import detect_hardware
from rlhfkit.models.loading import load_policy


@dataclass
class Samples:
    """Sampled responses, ``num_samples`` consecutive ones per prompt.

    Attributes:
        prompts: the prompt of each sample (text or chat messages), repeated ``num_samples`` times.
        texts: the decoded responses (special tokens skipped).
        prompt_ids: the prompt's token ids, unpadded, as the model saw them.
        response_ids: the sampled token ids up to and including the first EOS (without one when cut at
            ``max_new_tokens``).
        finished: whether the response ended with EOS.
        num_samples: samples per prompt.
    """

    prompts: list
    texts: list[str]
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    finished: list[bool]
    num_samples: int = 1

    def __len__(self) -> int:
        return len(self.texts)

    def mean_length(self) -> float:
        """Mean response length in tokens."""
        return float(np.mean([len(r) for r in self.response_ids])) if self.response_ids else 0.0

    def full_texts(self) -> list:
        """Prompt + response of each sample as a reward model scores it (:func:`rlhfkit.models.scoring.score_texts`):
        the concatenated text, or the chat messages with the response as the assistant's turn."""
        return [
            p + r if isinstance(p, str) else [*p, {"role": "assistant", "content": r}]
            for p, r in zip(self.prompts, self.texts, strict=True)
        ]


def load_for_sampling(model_dir: str | os.PathLike, preset="full"):
    """A saved policy ready to sample: left padding, eval mode, on the GPU when there is one (``qlora``: 4-bit).

    Returns ``(model, tokenizer)``.
    """
    model, tokenizer = load_policy(model_dir, preset, padding_side="left")
    if not getattr(model, "is_quantized", False):
        model.to(detect_hardware().device)
    return model.eval(), tokenizer


def encode_prompts(tokenizer, prompts: Sequence) -> list[list[int]]:
    """Token ids of prompts as a policy is sampled on them: text with the tokenizer's special tokens, chat messages
    rendered by the chat template with its generation prompt (which holds its own special tokens)."""
    if prompts and not isinstance(prompts[0], str):
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
        return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [list(ids) for ids in tokenizer(list(prompts))["input_ids"]]


def generate(
    model,
    tokenizer,
    prompts: Sequence,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    num_samples: int = 1,
    batch_size: int = 64,
    seed_each_batch: bool = False,
) -> Samples:
    """Sample ``num_samples`` responses per prompt (text or chat messages) at ``temperature``, top_k 0, ``top_p``.

    ``temperature=0`` is greedy decoding (``do_sample=False``: the most likely token at each step, the limit of
    sampling as the temperature goes to 0; ``top_p`` and the seed play no part). ``top_p`` < 1 samples from the
    smallest set of tokens whose probability reaches ``top_p`` (nucleus sampling); the default 1 is the policy itself.
    The global random state is left as it was (the seed applies inside this call only). ``seed_each_batch``: every
    batch starts from its own seed (``seed`` and the batch's offset), so two policies sampled on the same prompts with
    the same seed draw the same random numbers for the same prompt and step however long the other batches ran (torch
    samples one token as the argmax of p / q, q ~ Exp(1): where the two policies are close they pick the same tokens,
    and a paired comparison of them has much less noise).
    """
    prompt_ids = encode_prompts(tokenizer, prompts)
    samples = generate_ids(
        model,
        prompt_ids,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        num_samples=num_samples,
        batch_size=batch_size,
        seed_each_batch=seed_each_batch,
    )
    samples.prompts = [p for p in prompts for _ in range(num_samples)]
    samples.texts = tokenizer.batch_decode(samples.response_ids, skip_special_tokens=True)
    return samples


def generate_ids(
    model,
    prompt_ids: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    eos_token_id: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    num_samples: int = 1,
    batch_size: int = 64,
    seed_each_batch: bool = False,
) -> Samples:
    """:func:`generate` on token ids (``texts`` and ``prompts`` are left empty for the caller to fill)."""
    import torch

    if not temperature >= 0:
        raise ConfigError(f"temperature={temperature} must be >= 0 (0: greedy decoding; 1: the policy itself)")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p={top_p} must be in (0, 1] (1: every token, the policy itself)")
    if max_new_tokens < 1 or num_samples < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens} and num_samples={num_samples} must be >= 1")
    if pad_token_id is None or pad_token_id == eos_token_id:
        raise ConfigError(
            "the tokenizer needs a pad token distinct from EOS; load it with rlhfkit.models.loading.load_policy"
        )
    device = next(model.parameters()).device
    # generation stops at the model's own EOS ids (a chat model's end-of-turn token among them); so does the response
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stop = {eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None}
    repeated = [list(p) for p in prompt_ids for _ in range(num_samples)]
    responses: list[list[int]] = []
    finished: list[bool] = []
    if temperature > 0:
        decoding = {"do_sample": True, "top_k": 0, "top_p": top_p, "temperature": temperature}
    else:  # greedy; the model's generation_config may hold sampling settings, which do_sample=False ignores
        decoding = {"do_sample": False}
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, len(repeated), batch_size):
                if seed_each_batch:  # the batch's own stream: unaffected by how many steps earlier batches took
                    torch.manual_seed(int(np.random.SeedSequence([seed, start]).generate_state(1)[0]))
                batch = repeated[start : start + batch_size]
                width = max(len(p) for p in batch)
                ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, p in enumerate(batch):  # left padding, as generation needs
                    ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                    mask[i, width - len(p) :] = 1
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_token_id,
                    **decoding,
                )
                for row in out[:, width:].tolist():
                    end = next((t + 1 for t, token in enumerate(row) if token in stop), None)
                    responses.append(row[:end])
                    finished.append(end is not None)
    finally:
        model.train(was_training)
    return Samples(
        prompts=[], texts=[], prompt_ids=repeated, response_ids=responses, finished=finished, num_samples=num_samples
    )


def sequence_logprobs(
    model,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    batch_size: int = 16,
) -> np.ndarray:
    """``sum_t log p(response_t | prompt, response_<t)`` of each pair at ``temperature``, float64 of shape ``(n,)``.

    Sequences are left-padded with ``position_ids`` counted from each one's first real token (as generation counts
    them), and only the logits that predict response tokens are computed (``logits_to_keep``). An empty response
    has log-probability 0.
    """
    import torch

    if len(prompt_ids) != len(response_ids):
        raise ConfigError(f"{len(prompt_ids)} prompts for {len(response_ids)} responses; give one prompt per response")
    device = next(model.parameters()).device
    out = np.zeros(len(response_ids), dtype=np.float64)
    order = sorted(range(len(response_ids)), key=lambda i: -(len(prompt_ids[i]) + len(response_ids[i])))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = [i for i in order[start : start + batch_size] if response_ids[i]]
                if not idx:
                    continue
                seqs = [list(prompt_ids[i]) + list(response_ids[i]) for i in idx]
                width, keep = max(len(s) for s in seqs), max(len(response_ids[i]) for i in idx)
                ids = torch.zeros((len(idx), width), dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, s in enumerate(seqs):
                    ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                    mask[row, width - len(s) :] = 1
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                logits = model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=keep + 1,
                ).logits[:, :-1]  # (b, keep, V): the logits that predict the last `keep` tokens
                logp = torch.log_softmax(logits.float() / temperature, dim=-1)
                targets = ids[:, width - keep :].to(device)
                token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (b, keep)
                lengths = torch.tensor([len(response_ids[i]) for i in idx], device=device)
                in_response = torch.arange(keep, device=device) >= (keep - lengths).unsqueeze(1)
                out[idx] = (token_logp * in_response).sum(-1).double().cpu().numpy()
    finally:
        model.train(was_training)
    return out


@dataclass
class KLEstimate:
    """KL(policy || reference) in nats per sequence: ``mean`` with its standard error ``sem`` over ``n`` samples."""

    mean: float
    sem: float
    n: int


def sequence_kl(policy, reference, samples: Samples, *, temperature: float = 1.0, batch_size: int = 16) -> KLEstimate:
    """KL(policy || reference), nats per sequence, on ``samples`` drawn from ``policy`` at ``temperature``.

    Each sample contributes ``log pi(y|x) - log pi_ref(y|x)`` (:func:`sequence_logprobs` of both models); their mean
    estimates the KL without bias. Single samples can be negative; the mean of many is not, up to noise (``sem``).
    """
    kwargs = {"temperature": temperature, "batch_size": batch_size}
    diff = sequence_logprobs(policy, samples.prompt_ids, samples.response_ids, **kwargs) - sequence_logprobs(
        reference, samples.prompt_ids, samples.response_ids, **kwargs
    )
    n = len(diff)
    sem = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return KLEstimate(mean=float(diff.mean()) if n else float("nan"), sem=sem, n=n)
