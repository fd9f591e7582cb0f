"""The monitors' conditions: pure functions of the health timeline (one dict per logged step, see
:func:`rlhfkit.monitors.health.read_metrics`) and a :class:`~rlhfkit.monitors.config.MonitorConfig`.

:func:`conditions` says which signals' conditions hold at the timeline's latest record; :class:`HealthMonitor`
turns them into alerts (patience, actions). Everything here can be checked with hand-made metric sequences.

Scales
------
* **KL per starting token**: the KL per sequence divided by the *starting* mean response length (the mean of the
  first ``baseline_steps`` logged lengths). It is the per-token KL of the starting answers and does not depend on
  how long the task's answers are (8 / 15 nats per sequence, the levels RLHF guides quote for chat answers of a few
  hundred tokens, are ~0.03-0.05 / 0.05-0.1 nats per token), yet it keeps growing when a policy drifts by writing
  longer answers at the same per-token KL, as the per-sequence KL does.
* **Proxy gain per sqrt(KL)** (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"): with
  ``d = sqrt(KL)``, the gold reward of RL-optimised policies follows ``d (alpha - beta log d)`` -- it rises, peaks
  and falls -- while the proxy keeps rising ever more slowly. The gain is the Theil-Sen slope of the proxy reward
  against ``d`` over the last ``trend_window`` logged steps, compared with the best such slope before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlhfkit.monitors.config import MonitorConfig

Condition = tuple[float, float, str]  # (value, threshold, detail text)


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Theil-Sen slope (median of the pairwise slopes): one noisy batch in a window does not make a trend."""
    from scipy.stats import theilslopes

    if len(set(xs)) < 2:
        return 0.0
    return float(theilslopes(ys, xs).slope)


def values(timeline: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    return [r[name] for r in timeline if r.get(name) is not None]


def start(timeline: Sequence[Mapping[str, Any]], name: str, n: int) -> float | None:
    """Mean of the first ``n`` values of ``name`` (of those logged so far when fewer; None when none)."""
    first = values(timeline, name)[:n]
    return sum(first) / len(first) if first else None


def baseline(timeline: Sequence[Mapping[str, Any]], name: str, n: int) -> float | None:
    """Mean of the first ``n`` values of ``name``, once the latest record has a value past them (else None)."""
    vals = values(timeline, name)
    return sum(vals[:n]) / n if len(vals) > n and timeline[-1].get(name) is not None else None


def kl_per_start_token(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> list[tuple[int, float]]:
    """``(step, KL per starting token)`` of every record with a KL (see the module doc)."""
    length = start(timeline, "length", config.baseline_steps)
    if not length:
        return []
    return [(r["step"], r["kl"] / length) for r in timeline if r.get("kl") is not None]


def gain_flattening(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> Condition | None:
    """The proxy's recent gain per sqrt(KL) below ``gain_flattening_fraction`` x its best earlier gain.

    Judged only once the KL per starting token is above ``gain_flattening_min_kl`` and the earlier gain was
    positive (a proxy that never rose has no curve to turn).
    """
    c, w = config, config.trend_window
    kl = dict(kl_per_start_token(timeline, config))
    points = [(math.sqrt(max(kl[r["step"]], 0.0)), r["reward"]) for r in timeline
              if r["step"] in kl and r.get("reward") is not None]  # fmt: skip
    if len(points) < 2 * w or points[-1][0] ** 2 < c.gain_flattening_min_kl or timeline[-1]["step"] not in kl:
        return None
    gains = [theil_sen(*zip(*points[i - w : i])) for i in range(w, len(points) + 1)]
    best, now = max(gains[:-w]), gains[-1]  # the best gain of a window not overlapping the latest one
    if best <= 0 or now >= c.gain_flattening_fraction * best:
        return None
    detail = f"{now / best:.2f}x its best ({best:.3g} -> {now:.3g} reward per sqrt(nat/token))"
    return now / best, c.gain_flattening_fraction, detail


def conditions(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> dict[str, Condition]:
    """signal -> (value, threshold, detail text) for each condition that holds at the timeline's latest record."""
    c, now, out = config, timeline[-1], {}
    n = c.baseline_steps
    kl = now.get("kl")
    length0 = start(timeline, "length", n)
    if kl is not None and length0:
        per_token = kl / length0
        detail = f"{per_token:.3f} nats per starting token ({kl:.2f} nats/sequence, starting length {length0:.1f})"
        if per_token > c.kl_caution:
            out["kl_caution"] = (per_token, c.kl_caution, detail)
        if per_token > c.kl_limit:
            out["kl_limit"] = (per_token, c.kl_limit, detail)
    if kl is not None and kl < -c.negative_kl_tolerance:
        out["negative_kl"] = (kl, c.negative_kl_tolerance, f"{kl:.3f} nats/sequence")
    base = baseline(timeline, "disagreement", n)
    if base and base > 0 and now["disagreement"] / base > c.disagreement_growth:
        ratio = now["disagreement"] / base
        detail = f"{ratio:.2f}x as much as at the start (member std {base:.3g} -> {now['disagreement']:.3g})"
        out["ensemble_disagreement"] = (ratio, c.disagreement_growth, detail)
    flattening = gain_flattening(timeline, c)
    if flattening is not None:
        out["reward_gain_flattening"] = flattening
    base = baseline(timeline, "length", n)
    if base:
        ratio = now["length"] / base
        if ratio > c.length_drift_ratio or ratio < 1 / c.length_drift_ratio:
            detail = f"{ratio:.2f}x its start ({base:.1f} -> {now['length']:.1f} tokens)"
            out["length_drift"] = (ratio, c.length_drift_ratio, detail)
    base = baseline(timeline, "entropy", n)
    if base and base > 0 and now["entropy"] / base < c.entropy_collapse_fraction:
        ratio = now["entropy"] / base
        detail = f"{ratio:.2f}x its start ({base:.3f} -> {now['entropy']:.3f} nats/token)"
        out["entropy_collapse"] = (ratio, c.entropy_collapse_fraction, detail)
    zero = now.get("frac_reward_zero_std")
    base = baseline(timeline, "reward_std", n)
    if zero is not None and zero > c.reward_zero_std_fraction:
        detail = f"{zero:.0%} of groups have identical rewards"
        out["reward_variance"] = (zero, c.reward_zero_std_fraction, detail)
    elif base and base > 0 and now["reward_std"] / base < c.reward_std_fraction:
        ratio = now["reward_std"] / base
        detail = f"reward std is {ratio:.2f}x its start ({base:.3g} -> {now['reward_std']:.3g})"
        out["reward_variance"] = (ratio, c.reward_std_fraction, detail)
    race = _reward_kl_race(timeline, c)
    if race is not None:
        out["reward_kl_race"] = race
    clip, approx = now.get("clipfrac"), now.get("approxkl")
    if clip is not None and clip > c.clip_fraction_max:
        out["clipping"] = (clip, c.clip_fraction_max, f"clip fraction is {clip:.2f}")
    elif approx is not None and approx > c.approx_kl_max:
        out["clipping"] = (approx, c.approx_kl_max, f"approx-KL between PPO epochs is {approx:.3f} per token")
    base = baseline(timeline, "truncation", n)
    if base is not None and now["truncation"] - base > c.truncation_rise:
        detail = f"from {base:.0%} to {now['truncation']:.0%}"
        out["truncation"] = (now["truncation"] - base, c.truncation_rise, detail)
    return out


def _reward_kl_race(timeline: Sequence[Mapping[str, Any]], c: MonitorConfig) -> Condition | None:
    """Over the last ``trend_window`` logs the reward rises while the KL grows faster than ``reward_kl_slope``."""
    now = timeline[-1]
    points = [r for r in timeline if r.get("kl") is not None and r.get("reward") is not None][-c.trend_window :]
    if len(points) < c.trend_window or points[-1] is not now:
        return None
    steps = [float(r["step"]) for r in points]
    kl_slope = theil_sen(steps, [r["kl"] for r in points])
    if theil_sen(steps, [r["reward"] for r in points]) > 0 and kl_slope > c.reward_kl_slope:
        detail = f"{kl_slope:.2f} nats/sequence per step over the last {c.trend_window} logs"
        return kl_slope, c.reward_kl_slope, detail
    return None
