"""The over-optimisation signals as pure functions of hand-made timelines: smoothed levels, KL per starting token,
the reward ensemble's disagreement growth, and the proxy's gain per sqrt(KL) flattening -- each must fire on its
symptom and stay quiet without it."""

from __future__ import annotations

import math

import pytest

from rlhfkit.core.errors import ConfigError
from rlhfkit.monitors import MonitorConfig
from rlhfkit.monitors.signals import (
    baseline,
    conditions,
    gain_flattening,
    kl_per_start_token,
    kl_rate,
    recent,
    start,
    theil_sen,
)

CFG = MonitorConfig(
    baseline_steps=3, smoothing_steps=1, kl_caution=0.1, kl_limit=0.2, disagreement_growth=1.5,
    gain_flattening_fraction=0.25, gain_flattening_min_kl=0.01,
)  # fmt: skip


def _timeline(kl, reward, length=10.0, disagreement=None, every=1):
    """Records at steps every, 2 * every, ... from per-log lists (a scalar is repeated)."""
    n = len(kl)
    as_list = lambda v: list(v) if isinstance(v, list) else [v] * n  # noqa: E731
    rows = []
    for i, (k, r, ln, d) in enumerate(zip(kl, as_list(reward), as_list(length), as_list(disagreement))):
        row = {"step": (i + 1) * every, "kl": k, "reward": r, "length": ln}
        if d is not None:
            row["disagreement"] = d
        rows.append(row)
    return rows


def test_theil_sen_is_the_median_pairwise_slope():
    xs, ys = [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 30.0]  # slopes: 1, 1, 10, 1, 14.5, 28 -> median (1 + 10) / 2
    assert theil_sen(xs, ys) == pytest.approx(5.5)
    assert theil_sen([1.0, 1.0], [0.0, 5.0]) == 0.0


def test_levels_are_means_over_the_last_smoothing_steps_and_baselines_over_the_first():
    cfg = MonitorConfig(smoothing_steps=4, baseline_steps=2)
    timeline = _timeline([0.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 9.0])  # steps 1..6
    assert recent(timeline, "reward", cfg) == pytest.approx((3 + 4 + 5 + 9) / 4)  # steps 3..6
    assert start(timeline, "reward", cfg) == pytest.approx((1 + 2 + 3 + 4) / 4)  # steps 1..4
    assert baseline(timeline[:4], "reward", cfg) is None  # the starting window is not complete before step 5
    every5 = _timeline([0.0] * 6, [1.0, 2.0, 3.0, 4.0, 5.0, 9.0], every=5)  # GRPO-like: a log every 5 steps
    assert recent(every5, "reward", cfg) == 9.0  # one log covers the window
    assert start(every5, "reward", cfg) == pytest.approx(1.5)  # but at least baseline_steps logs


def test_kl_is_judged_per_token_of_the_starting_length():
    # 3 nats per sequence over 10-token answers is 0.3 per token: above the limit ...
    timeline = _timeline([0.0, 0.5, 1.0, 3.0], 0.0, length=10.0)
    assert kl_per_start_token(timeline, CFG)[-1] == (4, pytest.approx(0.3))
    assert {"kl_caution", "kl_limit"} <= set(conditions(timeline, CFG))
    # ... over 100-token answers it is 0.03 per token: healthy, where a per-sequence level (8 nats) could not tell
    assert not {"kl_caution", "kl_limit"} & set(conditions(_timeline([0.0, 0.5, 1.0, 3.0], 0.0, length=100.0), CFG))
    # answers that grow do not dilute it: the starting length stays the scale
    grown = _timeline([0.0, 0.5, 1.0, 3.0], 0.0, length=[10.0, 10.0, 10.0, 40.0])
    assert conditions(grown, CFG)["kl_limit"][0] == pytest.approx(0.3)
    # smoothed: one batch's spike is averaged with the rest of the window
    spike = _timeline([0.0, 0.5, 1.0, 1.0, 1.0, 3.0], 0.0)
    assert "kl_limit" not in conditions(spike, MonitorConfig(smoothing_steps=4, kl_limit=0.2))  # (1+1+1+3)/4/10


def test_ensemble_disagreement_fires_when_the_spread_grows_relative_to_its_start():
    steady = _timeline([0.0] * 8, 0.0, disagreement=[0.30, 0.32, 0.28, 0.31, 0.33, 0.29, 0.40, 0.42])
    assert "ensemble_disagreement" not in conditions(steady, CFG)  # 0.42 / 0.30 = 1.4x: below 1.5x
    grows = _timeline([0.0] * 8, 0.0, disagreement=[0.30, 0.32, 0.28, 0.31, 0.35, 0.40, 0.44, 0.50])
    value, threshold, detail = conditions(grows, CFG)["ensemble_disagreement"]
    assert value == pytest.approx(0.50 / 0.30) and threshold == 1.5 and "0.3 -> 0.5" in detail
    assert "ensemble_disagreement" not in conditions(_timeline([0.0] * 8, 0.0), CFG)  # one reward model: no signal


def test_gain_flattening_fires_when_the_proxy_stops_paying_for_kl():
    # KL per starting token grows linearly in the step; sqrt(KL) = d
    kl = [0.01 * t * 10 for t in range(1, 41)]  # per sequence, 10-token answers
    d = [math.sqrt(0.01 * t) for t in range(1, 41)]
    linear = [1.0 + 2.0 * x for x in d]  # the proxy rises linearly in sqrt(KL): both halves gain alike
    assert gain_flattening(_timeline(kl, linear), CFG) is None
    # the proxy stops rising at d = 0.33 (step 11): at step 40 the second half of the distance (d 0.32 -> 0.63) gained
    # 2 x (0.33 - 0.316), the first half (from the mean of the first 3 logs to d = 0.316) 2 x (0.316 - 0.138)
    stalled = [1.0 + 2.0 * min(x, 0.33) for x in d]
    value, threshold, detail = gain_flattening(_timeline(kl, stalled), CFG)
    p0, mid = sum(stalled[:3]) / 3, stalled[9]  # step 10: the first at d >= d(40) / 2
    assert value == pytest.approx((stalled[-1] - mid) / (mid - p0)) and value < threshold and "first half" in detail
    # a concave Gao et al. curve d (alpha - beta log d) flattens too, once far enough
    gao = [1.0 + x * (1.0 - 1.5 * math.log(x)) for x in d]
    assert gain_flattening(_timeline(kl[:8], gao[:8]), CFG) is None  # near the start: both halves still pay


def test_gain_flattening_needs_distance_and_a_rising_proxy():
    kl = [0.0001 * t for t in range(1, 21)]  # never leaves the start: not judged
    assert gain_flattening(_timeline(kl, [float(t) for t in range(20)]), CFG) is None
    kl = [0.01 * t * 10 for t in range(1, 21)]
    assert gain_flattening(_timeline(kl, [1.0] * 20), CFG) is None  # a proxy that never rose has no curve to turn


def test_gain_flattening_waits_for_min_steps():
    """The stalled curve above fires at step 40; with ``gain_flattening_min_steps`` 41 it is not judged yet, and the
    same curve logged every 2 steps (step 80) is judged again."""
    import dataclasses

    kl = [0.01 * t * 10 for t in range(1, 41)]
    stalled = [1.0 + 2.0 * min(math.sqrt(0.01 * t), 0.33) for t in range(1, 41)]
    late = dataclasses.replace(CFG, gain_flattening_min_steps=41)
    assert gain_flattening(_timeline(kl, stalled), CFG) is not None
    assert gain_flattening(_timeline(kl, stalled), late) is None
    assert gain_flattening(_timeline(kl, stalled, every=2), late) == gain_flattening(_timeline(kl, stalled), CFG)
    with pytest.raises(ConfigError, match=r"gain_flattening_min_steps=-1 must be >= 0"):
        MonitorConfig(gain_flattening_min_steps=-1)


def test_kl_rate_is_the_kl_per_starting_token_per_step_since_the_start():
    cfg = MonitorConfig(smoothing_steps=3, baseline_steps=3, reward_kl_min_kl=0.02, reward_kl_min_steps=0)
    # 10-token answers; KL per sequence 0.3, 0.6, 0.9, 1.2 at steps 2, 4, 6, 8: 0.015 per starting token per step
    timeline = _timeline([0.3, 0.6, 0.9, 1.2], [0.1, 0.2, 0.3, 0.4], every=2)
    # at step 8 the last 3 steps hold the logs of steps 6 and 8: KL (0.9 + 1.2) / 2 / 10 over the mean step 7
    assert kl_rate(timeline, cfg) == pytest.approx(0.105 / 7)
    assert kl_rate(timeline[:1], cfg) == pytest.approx(0.03 / 2)  # the first log alone: 0.03 per starting token
    assert kl_rate([{"step": 1, "kl": 0.1, "length": 10.0}], cfg) is None  # 0.01 per starting token: not judged


def test_reward_kl_race_fires_when_the_policy_leaves_the_reference_fast_with_a_rising_reward():
    cfg = MonitorConfig(
        smoothing_steps=1, reward_kl_slope=0.006, reward_kl_min_kl=0.02, trend_window=5, reward_kl_min_steps=0
    )
    # the length-bias-0.5 grid's GRPO runs: KL 0.12 per starting token by step 10 (0.012 per step), reward rising
    fast = _timeline([0.06, 1.2], [0.2, 0.4], every=5)
    value, threshold, detail = conditions(fast, cfg)["reward_kl_race"]
    assert value == pytest.approx(0.012) and threshold == 0.006 and "per step" in detail
    # the demo's healthy PPO: 0.08 per starting token by step 30 (0.0027 per step): quiet
    slow = _timeline([0.027 * t for t in range(1, 31)], [0.01 * t for t in range(1, 31)])
    assert "reward_kl_race" not in conditions(slow, cfg)
    # as fast, but the reward does not rise: not a race (the policy moves for another reason)
    assert "reward_kl_race" not in conditions(_timeline([0.06, 1.2], [0.4, 0.2], every=5), cfg)
    # as fast, but the KL is still under reward_kl_min_kl: a few early steps' noise does not decide
    assert "reward_kl_race" not in conditions(_timeline([0.01, 0.15], [0.2, 0.4]), cfg)


def _race_steps(kl_per_token, steps=200):
    """The steps where reward_kl_race's condition holds at the default settings (10-token answers, a rising reward)."""
    cfg, rows, out = MonitorConfig(), [], []
    for t in range(1, steps + 1):
        rows.append({"step": t, "kl": 10 * kl_per_token(t), "reward": 0.01 * t, "length": 10.0})
        if "reward_kl_race" in conditions(rows, cfg):
            out.append(t)
    return out


def test_reward_kl_race_waits_for_min_steps_so_an_early_kl_jump_that_levels_off_is_no_race():
    # a healthy PPO run (issue 28's seed-1 ensemble run, stopped at step 12 while its gold rose to step 200): the KL
    # jumps to 0.09 per starting token in 8 steps and stays; "since the start" divides it by a mean step of ~6 early
    jump = lambda t: 0.09 * min(1.0, t / 8)  # noqa: E731
    assert _race_steps(jump, steps=90) == []
    # the same timeline judged from the start (the old behaviour) fires within the first steps
    cfg, rows = MonitorConfig(reward_kl_min_steps=0), []
    for t in range(1, 13):
        rows.append({"step": t, "kl": 10 * jump(t), "reward": 0.01 * t, "length": 10.0})
    assert "reward_kl_race" in conditions(rows, cfg)
    # a policy that keeps racing away at 0.008 per starting token per step is caught as soon as it is judged
    assert _race_steps(lambda t: 0.008 * t, steps=40)[0] == 30


def test_kl_rate_thresholds_on_the_old_per_sequence_scale_are_refused():
    from rlhfkit.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"reward_kl_slope=0.5 is in nats per starting token per step"):
        MonitorConfig(reward_kl_slope=0.5)
