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
  and falls -- while the proxy keeps rising ever more slowly. :func:`gain_flattening` compares the smoothed proxy's
  gain over the second half of the distance travelled with its gain over the first half.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rlhfkit.monitors.config import SERIES, MonitorConfig

Condition = tuple[float, float, str]  # (value, threshold, detail text)


def theil_sen(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Theil-Sen slope (median of the pairwise slopes): one noisy batch in a window does not make a trend."""
    from scipy.stats import theilslopes

    if len(set(xs)) < 2:
        return 0.0
    return float(theilslopes(ys, xs).slope)


def values(timeline: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    return [r[name] for r in timeline if r.get(name) is not None]


def recent(timeline: Sequence[Mapping[str, Any]], name: str, config: MonitorConfig) -> float | None:
    """Mean of ``name`` over the logs of the last ``smoothing_steps`` global steps (at least the latest log), or
    None when the latest log lacks it: the level a signal judges, steadier than one log of a small batch."""
    now = timeline[-1]
    if now.get(name) is None:
        return None
    vals = [r[name] for r in timeline if r.get(name) is not None and r["step"] > now["step"] - config.smoothing_steps]
    return sum(vals) / len(vals) if vals else now[name]


def _start_values(timeline: Sequence[Mapping[str, Any]], name: str, config: MonitorConfig) -> list[float]:
    """The first values of ``name``: those logged in the first ``smoothing_steps`` steps, at least
    ``baseline_steps`` of them."""
    logged = [(r["step"], r[name]) for r in timeline if r.get(name) is not None]
    if not logged:
        return []
    in_window = sum(1 for step, _ in logged if step < logged[0][0] + config.smoothing_steps)
    return [v for _, v in logged[: max(config.baseline_steps, in_window)]]


def start(timeline: Sequence[Mapping[str, Any]], name: str, config: MonitorConfig) -> float | None:
    """The starting level of ``name``: the mean of its first values (of those logged so far; None when none)."""
    first = _start_values(timeline, name, config)
    return sum(first) / len(first) if first else None


def baseline(timeline: Sequence[Mapping[str, Any]], name: str, config: MonitorConfig) -> float | None:
    """The starting level, once the starting window is complete and the latest log is past it (else None)."""
    first = _start_values(timeline, name, config)
    done = len(values(timeline, name)) > len(first) and timeline[-1].get(name) is not None
    return sum(first) / len(first) if first and done and len(first) >= config.baseline_steps else None


def kl_per_start_token(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> list[tuple[int, float]]:
    """``(step, KL per starting token)`` of every record with a KL (see the module doc)."""
    length = start(timeline, "length", config)
    if not length:
        return []
    return [(r["step"], r["kl"] / length) for r in timeline if r.get("kl") is not None]


def smoothed(timeline: Sequence[Mapping[str, Any]], name: str, config: MonitorConfig) -> list[tuple[int, float]]:
    """``(step, mean of name over the logs of the preceding smoothing_steps steps)`` at every log that has it."""
    logged = [(r["step"], r[name]) for r in timeline if r.get(name) is not None]
    return [
        (
            s,
            sum(v for t, v in logged if s - config.smoothing_steps < t <= s)
            / sum(1 for t, _ in logged if s - config.smoothing_steps < t <= s),
        )
        for s, _ in logged
    ]


def gain_flattening(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> Condition | None:
    """The proxy reward's gain per unit of sqrt(KL) has flattened: over the second half of the distance travelled
    (sqrt of the KL per starting token, ``d/2 -> d``) the smoothed proxy gained less than
    ``gain_flattening_fraction`` x what it gained over the first half (``0 -> d/2``). A proxy linear in sqrt(KL)
    gains as much in both halves; the concave curves of Gao et al. less and less in the second.

    Judged from global step ``gain_flattening_min_steps`` on, once the KL per starting token is above
    ``gain_flattening_min_kl`` and the first half gained (a proxy that never rose has no curve to turn).
    """
    c = config
    length0 = start(timeline, "length", c)
    kl, proxy = dict(smoothed(timeline, "kl", c)), dict(smoothed(timeline, "reward", c))
    p0 = start(timeline, "reward", c)
    now = timeline[-1]["step"]
    if now < c.gain_flattening_min_steps:
        return None
    if not length0 or now not in kl or now not in proxy or kl[now] / length0 < c.gain_flattening_min_kl:
        return None
    d = {s: math.sqrt(max(v, 0.0) / length0) for s, v in kl.items() if s in proxy}
    half = d[now] / 2
    mid = next((s for s in sorted(d) if d[s] >= half), now)  # when the policy was half as far as now
    first, second = proxy[mid] - p0, proxy[now] - proxy[mid]
    if first <= 0 or mid == now or second >= c.gain_flattening_fraction * first:
        return None
    detail = (
        f"{second / first:.2f}x the first half's (reward +{first:.3g} for sqrt(KL/token) 0 -> {half:.2f}, "
        f"{second:+.3g} for {half:.2f} -> {d[now]:.2f})"
    )
    return second / first, c.gain_flattening_fraction, detail


def conditions(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> dict[str, Condition]:
    """signal -> (value, threshold, detail text) for each condition that holds at the timeline's latest record.

    Levels (KL, length, entropy, reward std, no-EOS share, ensemble spread) are :func:`recent` means over the last
    ``smoothing_steps`` steps, compared with their :func:`baseline` where a signal is relative to the start."""
    c, out = config, {}
    level = {name: recent(timeline, name, c) for name in SERIES}
    kl, length0 = level["kl"], start(timeline, "length", c)
    if kl is not None and length0:
        per_token = kl / length0
        detail = f"{per_token:.3f} nats per starting token ({kl:.2f} nats/sequence, starting length {length0:.1f})"
        if per_token > c.kl_caution:
            out["kl_caution"] = (per_token, c.kl_caution, detail)
        if per_token > c.kl_limit:
            out["kl_limit"] = (per_token, c.kl_limit, detail)
    if kl is not None and kl < -c.negative_kl_tolerance:
        out["negative_kl"] = (kl, c.negative_kl_tolerance, f"{kl:.3f} nats/sequence")
    relative = {name: (baseline(timeline, name, c), level[name]) for name in ("disagreement", "length", "entropy")}
    base, now = relative["disagreement"]
    if base and base > 0 and now / base > c.disagreement_growth:
        detail = f"{now / base:.2f}x as much as at the start (member std {base:.3g} -> {now:.3g})"
        out["ensemble_disagreement"] = (now / base, c.disagreement_growth, detail)
    flattening = gain_flattening(timeline, c)
    if flattening is not None:
        out["reward_gain_flattening"] = flattening
    base, now = relative["length"]
    if base and (now / base > c.length_drift_ratio or now / base < 1 / c.length_drift_ratio):
        detail = f"{now / base:.2f}x its start ({base:.1f} -> {now:.1f} tokens)"
        out["length_drift"] = (now / base, c.length_drift_ratio, detail)
    base, now = relative["entropy"]
    if base and base > 0 and now / base < c.entropy_collapse_fraction:
        detail = f"{now / base:.2f}x its start ({base:.3f} -> {now:.3f} nats/token)"
        out["entropy_collapse"] = (now / base, c.entropy_collapse_fraction, detail)
    variance = _reward_variance(timeline, c, level)
    if variance is not None:
        out["reward_variance"] = variance
    race = _reward_kl_race(timeline, c)
    if race is not None:
        out["reward_kl_race"] = race
    clip, approx = timeline[-1].get("clipfrac"), timeline[-1].get("approxkl")
    if clip is not None and clip > c.clip_fraction_max:
        out["clipping"] = (clip, c.clip_fraction_max, f"clip fraction is {clip:.2f}")
    elif approx is not None and approx > c.approx_kl_max:
        out["clipping"] = (approx, c.approx_kl_max, f"approx-KL between PPO epochs is {approx:.3f} per token")
    base, now = baseline(timeline, "truncation", c), level["truncation"]
    if base is not None and now - base > c.truncation_rise:
        out["truncation"] = (now - base, c.truncation_rise, f"from {base:.0%} to {now:.0%}")
    return out


def _reward_variance(timeline, c: MonitorConfig, level: dict[str, float | None]) -> Condition | None:
    """GRPO groups with identical rewards above ``reward_zero_std_fraction``, or the reward std below
    ``reward_std_fraction`` x its start."""
    zero, base = level["frac_reward_zero_std"], baseline(timeline, "reward_std", c)
    if zero is not None and zero > c.reward_zero_std_fraction:
        return zero, c.reward_zero_std_fraction, f"{zero:.0%} of groups have identical rewards"
    if base and base > 0 and level["reward_std"] / base < c.reward_std_fraction:
        ratio = level["reward_std"] / base
        return (
            ratio,
            c.reward_std_fraction,
            f"reward std is {ratio:.2f}x its start ({base:.3g} -> {level['reward_std']:.3g})",
        )
    return None


def kl_rate(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig) -> float | None:
    """KL per starting token gained per optimiser step, on average since the start: the :func:`recent` KL per
    starting token over the mean global step of the logs it averages (the KL is 0 at step 0). None without a KL
    or a starting length, while the KL per starting token is below ``reward_kl_min_kl``, or before global step
    ``reward_kl_min_steps``: until then the mean step is small, so a KL that jumps in the first steps and then
    levels off (a healthy run) reads as fast as one that keeps racing away."""
    c, now = config, timeline[-1]
    level, length0 = recent(timeline, "kl", c), start(timeline, "length", c)
    if level is None or not length0 or level / length0 < c.reward_kl_min_kl or now["step"] < c.reward_kl_min_steps:
        return None
    steps = [r["step"] for r in timeline if r.get("kl") is not None and r["step"] > now["step"] - c.smoothing_steps]
    mean_step = sum(steps) / len(steps)
    return level / length0 / mean_step if mean_step > 0 else None


def _reward_kl_race(timeline: Sequence[Mapping[str, Any]], c: MonitorConfig) -> Condition | None:
    """The reward rises (Theil-Sen slope over the last ``trend_window`` logs, at least two) while the KL per
    starting token grows faster than ``reward_kl_slope`` per step on average since the start (:func:`kl_rate`)."""
    rate = kl_rate(timeline, c)
    points = [r for r in timeline if r.get("reward") is not None][-c.trend_window :]
    if rate is None or rate <= c.reward_kl_slope or len(points) < 2 or points[-1] is not timeline[-1]:
        return None
    if theil_sen([float(r["step"]) for r in points], [r["reward"] for r in points]) <= 0:
        return None
    detail = (
        f"{rate:.4f} nats per starting token per step on average (KL {rate * timeline[-1]['step']:.3f} per "
        f"starting token by step {timeline[-1]['step']})"
    )
    return rate, c.reward_kl_slope, detail
