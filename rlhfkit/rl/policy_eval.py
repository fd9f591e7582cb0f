"""Judging a policy on held-out prompts the same way for every algorithm: reward-model score, gold reward, KL, length.

:func:`evaluate_policy` samples one response per prompt (:func:`rlhfkit.models.sampling.generate` with a seed per
batch: the same seed gives the same responses, and two policies evaluated with one seed share their random numbers
prompt by prompt, so where they are close they answer alike and :func:`paired_gain` has less noise), scores prompt +
response with the reward model exactly as it was trained (:func:`rlhfkit.models.scoring.proxy_scores`: raw scores; an
ensemble's members' mean standardised score), applies a gold reward
when one is known (the lab's), and measures KL(policy || reference) in nats per sequence on those same samples
(:func:`rlhfkit.models.sampling.sequence_kl`). The pipeline's final evaluation and ``rlhfkit compare`` call it, so PPO,
GRPO, RLOO, DPO and rejection sampling are judged on one scale. Two policies evaluated on the same prompts are
compared prompt by prompt: :func:`paired_gain` (the mean score difference) and :func:`paired_win_rates` (how often
one's answer beats the other's, by gold and by the reward model: :mod:`rlhfkit.rl.winrate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlhfkit.models.sampling import generate, sequence_kl
from rlhfkit.models.scoring import proxy_scores
from rlhfkit.rl.winrate import outcomes, win_rate_metrics


@dataclass
class PolicyEval:
    """What :func:`evaluate_policy` measured, means over the prompts.

    Attributes:
        proxy: reward-model score (raw, as the reward model outputs it).
        gold: the gold reward, when a ``metric_fn`` was given (None otherwise).
        kl, kl_sem: KL(policy || reference), nats per sequence, and its standard error (0 without a reference).
        length: response length in characters; tokens: in tokens; truncated: share cut at ``max_new_tokens``.
        responses: the sampled responses, in prompt order.
        proxy_values, gold_values: each prompt's reward-model score and gold reward, in prompt order (gold_values
            empty without a ``metric_fn``): :func:`paired_gain` compares two policies prompt by prompt.
    """

    proxy: float
    gold: float | None
    kl: float
    kl_sem: float
    length: float
    tokens: float
    truncated: float
    responses: list[str] = field(default_factory=list, repr=False)
    proxy_values: list[float] = field(default_factory=list, repr=False)
    gold_values: list[float] = field(default_factory=list, repr=False)

    def metrics(self, suffix: str) -> dict[str, float | None]:
        """The numbers as the final evaluation records them: ``proxy_<suffix>``, ``gold_<suffix>`` ..."""
        out = {
            f"proxy_{suffix}": self.proxy,
            f"length_{suffix}": self.length,
            f"kl_{suffix}": self.kl,
            f"kl_sem_{suffix}": self.kl_sem,
            f"truncated_{suffix}": self.truncated,
        }
        if self.gold is not None:
            out[f"gold_{suffix}"] = self.gold
        return out


def paired_gain(before: Sequence[float], after: Sequence[float]) -> tuple[float, float]:
    """``(mean, standard error)`` of ``after[i] - before[i]``: two policies scored on the same prompts, compared prompt
    by prompt (the SEM is ``std(ddof=1) / sqrt(n)`` of the differences, the paired t-test's denominator; NaN for
    fewer than 2 prompts). Pairing removes the prompt-to-prompt variance both policies share."""
    a, b = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_gain: need two equal-length lists, got {a.shape} and {b.shape}")
    diff = b - a
    if len(diff) < 2:
        return (float(diff.mean()) if len(diff) else float("nan")), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def paired_win_rates(reference: PolicyEval, policy: PolicyEval) -> dict[str, float | int]:
    """``policy``'s win rates over ``reference`` on the same prompts, ties one half, with 95% intervals and the
    length-controlled rates (:func:`rlhfkit.rl.winrate.win_rate_metrics`, lengths in characters): by the gold reward
    (``win_rate_gold``, ``lc_win_rate_gold`` ..., when both were scored by one) and by the reward model
    (``win_rate_rm`` ...). Where both policies gave the same answer the prompt is a tie."""
    if len(policy.responses) != len(reference.responses):
        raise ValueError(f"paired_win_rates: {len(policy.responses)} and {len(reference.responses)} answers")
    same = [a == b for a, b in zip(policy.responses, reference.responses)]
    lengths = [len(r) for r in policy.responses], [len(r) for r in reference.responses]
    judges = {"gold": (policy.gold_values, reference.gold_values), "rm": (policy.proxy_values, reference.proxy_values)}
    out: dict[str, float | int] = {}
    for judge, (mine, theirs) in judges.items():
        if mine and theirs:
            out.update(win_rate_metrics(judge, outcomes(mine, theirs, same), *lengths))
    return out


def evaluate_policy(
    policy,
    tokenizer,
    prompts: Sequence,
    *,
    reward_model,
    reward_tokenizer,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    reference=None,
    metric_fn: Callable | None = None,
    batch_size: int = 64,
) -> PolicyEval:
    """Sample ``policy`` once per prompt and measure it (see the module docstring).

    Args:
        policy, tokenizer: a loaded policy (:func:`rlhfkit.models.sampling.load_for_sampling`) and its tokenizer.
        prompts: strings or chat messages.
        reward_model, reward_tokenizer: the reward model (:func:`rlhfkit.models.scoring.load_scorer`); for an
            ensemble, its :class:`~rlhfkit.models.scoring.EnsembleScorer` and None (the proxy is then the members'
            mean standardised score).
        reference: the model the KL is measured to (the SFT model); None (or ``policy`` itself): KL 0.
        metric_fn: a gold reward with TRL's reward-function signature, ``f(prompts, completions) -> list[float]``.
    """
    samples = generate(
        policy,
        tokenizer,
        list(prompts),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        seed_each_batch=True,
    )
    proxy = proxy_scores(reward_model, reward_tokenizer, samples)
    kl, kl_sem = 0.0, 0.0
    if reference is not None and reference is not policy:
        estimate = sequence_kl(policy, reference, samples, temperature=temperature)
        kl, kl_sem = estimate.mean, estimate.sem
    golds = [] if metric_fn is None else [float(g) for g in metric_fn(samples.prompts, samples.texts)]
    return PolicyEval(
        proxy=float(np.mean(proxy)),
        gold=float(np.mean(golds)) if metric_fn is not None else None,
        kl=kl,
        kl_sem=kl_sem,
        length=float(np.mean([len(r) for r in samples.texts])),
        tokens=samples.mean_length(),
        truncated=1.0 - float(np.mean(samples.finished)),
        responses=samples.texts,
        proxy_values=[float(x) for x in proxy],
        gold_values=golds,
    )
