"""PPO for language models as pure tensor functions: masked statistics, per-token KL, reward shaping, GAE,
clipped losses, stop-token handling and KL controllers.

Every function works on **right-padded response tensors** of shape ``(B, T)`` (B sequences, T response
positions) with a ``mask`` of the same shape that is 1 (or True) on real response tokens and 0 on padding.
A response keeps its stop token (EOS) as its last real token; everything after it is padding. Outputs are
exactly 0 on padding unless stated otherwise. No function here touches a model, so each one is unit-tested
against a plain-Python reference (``tests/rl/ppo/test_core.py``).

References
----------
* PPO: Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (clipped objective, eq. 7).
* GAE: Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (eq. 16).
* RLHF reward with a per-token KL penalty and the adaptive KL controller: Ziegler et al. 2019, "Fine-Tuning
  Language Models from Human Preferences" (sec. 2.2); Ouyang et al. 2022 (InstructGPT), eq. 2.
* KL estimators k1 / k3: J. Schulman, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html).
* Implementation details (value clipping, reward whitening, advantage whitening, EOS handling) follow TRL 1.12's
  ``trl/experimental/ppo/ppo_trainer.py`` and Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO".
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "AdaptiveKLController",
    "FixedKLController",
    "apply_missing_eos_penalty",
    "clipped_policy_loss",
    "clipped_value_loss",
    "compute_gae",
    "entropy_from_logits",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "per_token_kl",
    "shape_rewards",
    "truncate_at_stop_token",
]


# ----------------------------------------------------------------------------------------- masked statistics
def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is set.

    Args:
        values: ``(B, T)`` (any shape broadcastable with ``mask``).
        mask: same shape, 1/True on valid positions.
        dim: reduce over this dimension only (e.g. ``dim=1``: one mean per row), or over everything when None.
    Returns:
        a scalar, or ``values.shape`` without ``dim``. NaN when no position is valid.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(dim) / mask.sum(dim)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``values`` over valid positions (scalar); ``unbiased`` applies Bessel's correction n/(n-1).

    Raises ``ValueError`` for an unbiased variance of fewer than 2 valid values (as TRL 1.12's ``masked_var``).
    """
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError(
                f"masked_var needs at least 2 valid values for an unbiased variance, got {int(n)}; "
                "use a larger batch (per_device_train_batch_size * gradient_accumulation_steps)"
            )
        variance = variance * n / (n - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``values`` to variance 1 (and mean 0 when ``shift_mean``) over valid positions; padding -> 0.

    ``shift_mean=False`` keeps the original mean (used to whiten rewards without changing their sign on
    average, as TRL 1.12 / OpenAI's lm-human-preferences do); advantages are whitened with the shift.

    Args:
        values, mask: ``(B, T)``.
    Returns:
        ``(B, T)``, exactly 0 where ``mask`` is 0.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


# ----------------------------------------------------------------------------------------- log-probs, entropy
def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[tokens]`` without materialising the full log-softmax.

    Args:
        logits: ``(B, T, V)``, already divided by the sampling temperature.
        tokens: ``(B, T)`` token ids.
    Returns:
        ``(B, T)`` log-probabilities (float32 or the logits' dtype if wider).
    """
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    picked = torch.gather(logits, dim=-1, index=tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` per position: ``(B, T, V) -> (B, T)`` (as TRL 1.12's ``policy/entropy``)."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


# ----------------------------------------------------------------------------------------- stop token, EOS
def truncate_at_stop_token(
    responses: torch.Tensor, stop_token_id: int | None, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every token after the first ``stop_token_id`` by ``pad_token_id`` (the stop token is kept).

    Args:
        responses: ``(B, T)`` generated token ids.
        stop_token_id: the stop token, or None for no truncation.
        pad_token_id: the id written after the stop token.
    Returns:
        ``(truncated, mask)``: ``(B, T)`` ids and a ``(B, T)`` bool mask of the kept (real) tokens.
        Without a stop token every generated token is real. Follows TRL 1.12's ``truncate_response``.
    """
    T = responses.shape[1]
    positions = torch.arange(T, device=responses.device).unsqueeze(0)
    if stop_token_id is None:
        mask = torch.ones_like(responses, dtype=torch.bool)
        return responses.clone(), mask
    is_stop = responses == stop_token_id
    first_stop = torch.where(is_stop.any(1), is_stop.int().argmax(1), T)  # T: no stop token, keep everything
    mask = positions <= first_stop.unsqueeze(1)
    return responses.masked_fill(~mask, pad_token_id), mask


def apply_missing_eos_penalty(
    scores: torch.Tensor, responses: torch.Tensor, mask: torch.Tensor, eos_token_id: int, penalty: float | None
) -> torch.Tensor:
    """Subtract ``penalty`` from the score of every response without ``eos_token_id`` among its real tokens.

    Args:
        scores: ``(B,)``; responses, mask: ``(B, T)``.
    Returns:
        ``(B,)`` new scores (``scores`` unchanged when ``penalty`` is None). TRL 1.12's ``missing_eos_penalty``.
    """
    if penalty is None:
        return scores
    has_eos = ((responses == eos_token_id) & mask.bool()).any(1)
    return scores - penalty * (~has_eos).to(scores.dtype)


# ----------------------------------------------------------------------------------------- KL and rewards
def per_token_kl(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of the sampled tokens.

    With ``log r = ref_logprobs - logprobs`` (Schulman's blog, samples drawn from the policy):

    * ``k1 = -log r = logprobs - ref_logprobs``: unbiased, can be negative per token;
    * ``k3 = (r - 1) - log r``: unbiased, lower variance, never negative (computed with ``expm1`` and
      clamped at 0 so rounding cannot make it negative).

    Args:
        logprobs, ref_logprobs, mask: ``(B, T)``.
    Returns:
        ``(B, T)``, 0 on padding and 0 wherever the two log-probs are equal.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        kl = -log_ratio
    elif estimator == "k3":
        kl = (torch.expm1(log_ratio) - log_ratio).clamp(min=0.0)
    else:
        raise ValueError(f"kl_estimator={estimator!r} is not supported; use 'k1' or 'k3'")
    return kl * mask.to(kl.dtype)


def shape_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token RL reward: ``-kl_coef * KL`` at every real token, plus the scalar score at the last real token.

    This is the InstructGPT objective (Ouyang et al. 2022, eq. 2; Ziegler et al. 2019) written per token.
    TRL 1.12 adds the score one position *after* the last real token when there is room (its ``actual_end``);
    here it lands on the last real token itself, the token whose emission ended the episode.

    Args:
        scores: ``(B,)`` reward-model scores of the whole responses.
        kl, mask: ``(B, T)``; every row has at least one real token.
    Returns:
        ``(rewards, non_score_rewards)``, both ``(B, T)`` and 0 on padding.
    """
    mask_f = mask.to(kl.dtype)
    non_score = -kl_coef * kl * mask_f
    last = mask_f.sum(1).long() - 1
    rewards = non_score.clone()
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards, non_score


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded episodes (Schulman et al. 2016, eq. 16).

    For each row, with ``L`` real tokens and ``V_L = 0`` (the episode ends after its last real token)::

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1},     A_L = 0
        R_t     = A_t + V_t                              (the value target)

    Args:
        rewards: ``(B, T)`` per-token rewards (:func:`shape_rewards`).
        values: ``(B, T)`` value estimates ``V(s_t)`` before each response token.
        mask: ``(B, T)``.
    Returns:
        ``(advantages, returns)``, both ``(B, T)`` and exactly 0 on padding. Advantages are *not* whitened.
    """
    mask_f = mask.to(values.dtype)
    rewards, values = rewards * mask_f, values * mask_f  # padding carries no reward and no bootstrap value
    T = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = (delta + gamma * lam * last_gae) * mask_f[:, t]
        advantages[:, t] = last_gae
    returns = (advantages + values) * mask_f
    return advantages, returns


# ----------------------------------------------------------------------------------------- losses
def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate loss (Schulman et al. 2017, eq. 7), averaged over real tokens.

    ``loss = mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))`` with ``ratio = exp(logp - old_logp)``.
    Where the clipped branch is selected (the ratio left the trust region in the direction the advantage
    pushes) the loss is constant in ``logprobs``, so its gradient there is exactly 0.

    Args:
        logprobs: ``(B, T)`` current log-probs (with grad); old_logprobs, advantages, mask: ``(B, T)``.
    Returns:
        ``(loss, clipfrac, approxkl)`` scalars: clipfrac = fraction of real tokens where the clipped branch is
        strictly larger; approxkl = ``0.5 * mean((logp - old_logp)^2)`` over real tokens (TRL 1.12's
        ``policy/approxkl_avg``).
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    losses = -advantages * ratio
    losses_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(losses, losses_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((losses_clipped > losses).float(), mask)
        approxkl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask)
    return loss, clipfrac, approxkl


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss: ``0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps) - R)^2))`` over real tokens.

    Args:
        values: ``(B, T)`` current value predictions (with grad); old_values, returns, mask: ``(B, T)``.
    Returns:
        ``(loss, clipfrac)`` scalars; clipfrac = fraction of real tokens where the clipped error is larger
        (TRL 1.12's ``val/clipfrac_avg``).
    """
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = (values - returns) ** 2
    losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(losses, losses_clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((losses_clipped > losses).float(), mask)
    return loss, clipfrac


# ----------------------------------------------------------------------------------------- KL controllers
class FixedKLController:
    """A constant KL coefficient ``beta``."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op: the coefficient is fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019 (sec. 2.2): steer the KL towards ``target`` by adapting ``beta``.

    After each batch of ``n_steps`` episodes with mean sequence KL ``KL_t``::

        e_t      = clip(KL_t / target - 1, -0.2, 0.2)
        beta_t+1 = beta_t * (1 + e_t * n_steps / horizon)

    Ziegler et al. used ``horizon = 10000`` episodes.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target ({target}) and horizon ({horizon}) must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        if not math.isfinite(current_kl):
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
