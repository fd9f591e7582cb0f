"""The new over-optimisation signals as pure functions of hand-made timelines: KL per starting token, the reward
ensemble's disagreement growth, and the proxy's gain per sqrt(KL) flattening -- each must fire on its symptom and
stay quiet without it."""

from __future__ import annotations

import math

import pytest

from rlhfkit.monitors import MonitorConfig
from rlhfkit.monitors.signals import conditions, gain_flattening, kl_per_start_token, theil_sen

CFG = MonitorConfig(
    baseline_steps=3, trend_window=4, kl_caution=0.1, kl_limit=0.2, disagreement_growth=1.5,
    gain_flattening_fraction=0.25, gain_flattening_min_kl=0.01,
)  # fmt: skip


def _timeline(kl, reward, length=10.0, disagreement=None):
    """Records at steps 1..n from per-step lists (a scalar is repeated)."""
    n = len(kl)
    as_list = lambda v: list(v) if isinstance(v, list) else [v] * n  # noqa: E731
    rows = []
    for i, (k, r, ln, d) in enumerate(zip(kl, as_list(reward), as_list(length), as_list(disagreement))):
        row = {"step": i + 1, "kl": k, "reward": r, "length": ln}
        if d is not None:
            row["disagreement"] = d
        rows.append(row)
    return rows


def test_theil_sen_is_the_median_pairwise_slope():
    xs, ys = [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 30.0]  # slopes: 1, 1, 10, 1, 14.5, 28 -> median (1 + 10) / 2
    assert theil_sen(xs, ys) == pytest.approx(5.5)
    assert theil_sen([1.0, 1.0], [0.0, 5.0]) == 0.0


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


def test_ensemble_disagreement_fires_when_the_spread_grows_relative_to_its_start():
    steady = _timeline([0.0] * 8, 0.0, disagreement=[0.30, 0.32, 0.28, 0.31, 0.33, 0.29, 0.40, 0.42])
    assert "ensemble_disagreement" not in conditions(steady, CFG)  # 0.42 / 0.30 = 1.4x: below 1.5x
    grows = _timeline([0.0] * 8, 0.0, disagreement=[0.30, 0.32, 0.28, 0.31, 0.35, 0.40, 0.44, 0.50])
    value, threshold, detail = conditions(grows, CFG)["ensemble_disagreement"]
    assert value == pytest.approx(0.50 / 0.30) and threshold == 1.5 and "0.3 -> 0.5" in detail
    assert "ensemble_disagreement" not in conditions(_timeline([0.0] * 8, 0.0), CFG)  # one reward model: no signal


def test_gain_flattening_fires_when_the_proxy_stops_paying_for_kl():
    # KL per starting token grows linearly; the proxy rises linearly in sqrt(KL) (healthy), then stalls
    kl = [0.02 * t * 10 for t in range(1, 21)]  # per sequence, 10-token answers: 0.02 t per token
    rising = [2.0 * math.sqrt(0.02 * t) for t in range(1, 21)]
    assert gain_flattening(_timeline(kl, rising), CFG) is None
    stalled = rising[:12] + [rising[11] + 0.002 * i for i in range(1, 9)]
    hit = gain_flattening(_timeline(kl, stalled), CFG)
    assert hit is not None and hit[0] < 0.25 and "reward per sqrt" in hit[2]


def test_gain_flattening_needs_distance_and_a_rising_proxy():
    kl = [0.0001 * t for t in range(1, 21)]  # never leaves the start: not judged
    assert gain_flattening(_timeline(kl, [0.0] * 20), CFG) is None
    kl = [0.02 * t * 10 for t in range(1, 21)]
    assert gain_flattening(_timeline(kl, [1.0] * 20), CFG) is None  # a proxy that never rose has no curve to turn
