"""Win rates: how often one policy's answer is preferred to another's on the same prompts, with a 95% interval.

The samples are paired: prompt ``i`` has the policy's answer and the reference's (the SFT policy's), and a judge --
the gold reward, the reward model, a judge model -- says which is better. The per-prompt outcome is

    o_i = 1 (the policy's answer wins), 0.5 (a tie), 0 (it loses)         or a judge's probability in [0, 1]

and the win rate is their mean, ties counting one half (InstructGPT's and AlpacaEval's convention).

* :func:`win_rate` -- from two lists of scores (the higher wins, equal scores or identical answers tie);
  :func:`win_rate_from_outcomes` -- from per-prompt outcomes (a judge's verdicts or probabilities).
  The 95% interval is Wilson's score interval with the variance ties remove: under a win rate ``p`` an outcome in
  [0, 1] has variance ``p (1 - p) - c`` with ``c = E[o (1 - o)]`` (1/4 per tie, 0 for a win or a loss), and the
  interval is every ``p`` with ``(p_hat - p)^2 <= z^2 (p (1 - p) - c_hat) / n``. Without ties (``c = 0``) it is
  exactly Wilson's interval (``statsmodels``' ``proportion_confint(..., method="wilson")``); counting a tie as
  half a win in Wilson's interval instead would ignore that a tie is less variable than a coin flip and make the
  interval too wide when many answers tie (two close policies sampled with shared random numbers often answer
  alike). Like Wilson's, it stays inside [0, 1] and does not collapse when every decided prompt goes one way; when
  every prompt ties, nothing in the sample varies and the interval is the point 0.5.
* :func:`length_controlled_win_rate` -- AlpacaEval 2's length control (Dubois et al. 2024, "Length-Controlled
  AlpacaEval", arXiv:2404.04475, section 3): a logistic model of the outcome on the length difference,

      logit P(policy wins | prompt i) = theta + phi * tanh((len_policy_i - len_ref_i) / std(len_policy - len_ref))

  read at zero length difference: ``sigmoid(theta)``, "the win rate if both answers had the same length". Lengths
  are in characters (any tokenizer's answers compare; the standardisation removes the unit), the tanh of the
  standardised difference is AlpacaEval's (one very long answer cannot dominate the fit). Ties and probabilities
  enter as fractional outcomes: a binomial GLM on outcomes in [0, 1] (Papke & Wooldridge 1996's fractional logit,
  ``statsmodels``), so a tie is half a win and half a loss; its 95% interval is ``sigmoid`` of the intercept's
  Wald interval with the sandwich (HC0) covariance, which fractional outcomes need. AlpacaEval's per-instruction
  difficulty term is left out: one reference and one policy give one outcome per prompt.
* :func:`win_rate_metrics` -- the keys the final evaluation records for one judge; :func:`rate_text` shows one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


@dataclass(frozen=True)
class WinRate:
    """A win rate of a policy over a reference on ``n`` paired prompts.

    Attributes:
        rate: mean per-prompt outcome (win 1, tie 0.5, loss 0; or a judge's probability), in [0, 1].
        low, high: its 95% interval.
        n: prompts judged; ties: prompts whose outcome is exactly 0.5.
    """

    rate: float
    low: float
    high: float
    n: int
    ties: int

    def metrics(self, key: str) -> dict[str, float]:
        """``{key: rate, key_low: low, key_high: high}``."""
        return {key: self.rate, f"{key}_low": self.low, f"{key}_high": self.high}


def outcomes(
    scores_policy: Sequence[float], scores_ref: Sequence[float], same_answer: Sequence[bool] | None = None
) -> np.ndarray:
    """Per-prompt outcomes of two score lists: 1 where the policy's score is higher, 0 where lower, 0.5 where equal
    or where ``same_answer[i]`` (the two answers are one text: a tie whatever the scores, as a reward model may score
    one text a hair differently in two batches)."""
    a, b = np.asarray(scores_policy, dtype=float), np.asarray(scores_ref, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"win_rate: need two equal-length score lists, got {a.shape} and {b.shape}")
    out = np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
    if same_answer is not None:
        same = np.asarray(same_answer, dtype=bool)
        if same.shape != a.shape:
            raise ValueError(f"win_rate: same_answer has {same.shape}, the scores {a.shape}")
        out[same] = 0.5
    return out


def _checked(values: Sequence[float]) -> np.ndarray:
    o = np.asarray(values, dtype=float)
    if o.ndim != 1 or len(o) == 0:
        raise ValueError(f"win rate: need a non-empty list of per-prompt outcomes, got shape {o.shape}")
    if not np.all((o >= 0) & (o <= 1)):  # also catches NaN
        bad = o[~((o >= 0) & (o <= 1))][0]
        raise ValueError(f"win rate: outcome {bad!r} is not in [0, 1] (1 = the policy wins, 0.5 = tie, 0 = loses)")
    return o


def win_rate_from_outcomes(per_prompt: Sequence[float]) -> WinRate:
    """The win rate and its 95% interval from per-prompt outcomes in [0, 1] (see the module docstring): a judge's
    verdicts (1 the policy's answer, 0.5 tie, 0 the reference's) or its probabilities that the policy's is better."""
    o = _checked(per_prompt)
    n, rate = len(o), float(o.mean())
    spread = float(np.mean(o * (1.0 - o)))  # c_hat: 1/4 per tie, 0 per win or loss
    variance = max(rate * (1.0 - rate) - spread, 0.0)  # the outcomes' variance (ddof 0)
    k = Z95**2 / n
    center = (rate + k / 2) / (1 + k)
    half = Z95 / (1 + k) * math.sqrt(variance / n + k * (1.0 - 4.0 * spread) / (4 * n))
    low, high = max(center - half, 0.0), min(center + half, 1.0)
    return WinRate(rate=rate, low=low, high=high, n=n, ties=int(np.sum(o == 0.5)))


def win_rate(
    scores_policy: Sequence[float], scores_ref: Sequence[float], same_answer: Sequence[bool] | None = None
) -> WinRate:
    """The policy's win rate over the reference from per-prompt scores by one judge (gold reward, reward model):
    :func:`outcomes`, then :func:`win_rate_from_outcomes`."""
    return win_rate_from_outcomes(outcomes(scores_policy, scores_ref, same_answer))


def length_controlled_win_rate(
    per_prompt: Sequence[float], lengths_policy: Sequence[float], lengths_ref: Sequence[float]
) -> WinRate | None:
    """AlpacaEval 2's length-controlled win rate (see the module docstring) from per-prompt outcomes in [0, 1] and
    each prompt's answer lengths (characters). None when the model cannot be fitted: every outcome the same, or the
    outcomes separated by the length difference (the win rate at zero difference is then not identified)."""
    import statsmodels.api as sm
    from scipy.special import expit
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    o = _checked(per_prompt)
    diff = np.asarray(lengths_policy, dtype=float) - np.asarray(lengths_ref, dtype=float)
    if diff.shape != o.shape:
        raise ValueError(f"length-controlled win rate: {len(o)} outcomes but lengths of shape {diff.shape}")
    if np.all(o == o[0]) and o[0] in (0.0, 1.0):
        return None  # every prompt won (or lost): the logit is infinite
    std = diff.std(ddof=1) if len(diff) > 1 else 0.0
    columns = [np.ones_like(diff)] + ([np.tanh(diff / std)] if std > 0 else [])  # equal lengths: the intercept only
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to a separation, reported as None
        try:
            fit = sm.GLM(o, np.column_stack(columns), family=sm.families.Binomial()).fit(cov_type="HC0")
        except (PerfectSeparationWarning, np.linalg.LinAlgError):
            return None
    theta, (low, high) = float(fit.params[0]), fit.conf_int(alpha=0.05)[0]
    if not all(math.isfinite(x) for x in (theta, low, high)):
        return None
    rate, low, high = (float(x) for x in expit([theta, low, high]))
    return WinRate(rate=rate, low=low, high=high, n=len(o), ties=int(np.sum(o == 0.5)))


def win_rate_metrics(
    judge: str, per_prompt: Sequence[float], lengths_policy: Sequence[float], lengths_ref: Sequence[float]
) -> dict[str, float | int]:
    """The final evaluation's numbers for one judge (``gold``, ``rm``, ``judge``): ``win_rate_<judge>`` with
    ``_low`` / ``_high`` (95%) and ``_ties`` (prompts tied), and ``lc_win_rate_<judge>`` with ``_low`` / ``_high``
    (left out when the length-controlled model cannot be fitted)."""
    raw = win_rate_from_outcomes(per_prompt)
    out: dict[str, float | int] = {**raw.metrics(f"win_rate_{judge}"), f"win_rate_{judge}_ties": raw.ties}
    lc = length_controlled_win_rate(per_prompt, lengths_policy, lengths_ref)
    if lc is not None:
        out.update(lc.metrics(f"lc_win_rate_{judge}"))
    return out


def rate_text(metrics: Mapping[str, object], key: str, digits: int = 2) -> str | None:
    """``"0.71 [0.66, 0.76]"``: a rate recorded by :func:`win_rate_metrics` (``metrics[key]``, ``key_low``,
    ``key_high``) and its 95% interval; None when ``metrics`` has no ``key``."""
    if metrics.get(key) is None:
        return None
    return f"{metrics[key]:.{digits}f} [{metrics[f'{key}_low']:.{digits}f}, {metrics[f'{key}_high']:.{digits}f}]"
