"""The RL figure: smoothed curves over faint raw values, the monitors' KL levels, the stop and the returned step."""

import math

from rlhfkit.core.io import save_figure
from rlhfkit.monitors.config import MonitorConfig
from rlhfkit.monitors.plots import rl_figure
from rlhfkit.monitors.signals import smoothed


def _timeline(steps=60, stop=50):
    """A run whose proxy swings step to step while its KL climbs; a kl_limit stop alert at ``stop``."""
    timeline = []
    for s in range(1, steps + 1):
        record = {"step": s, "reward": 0.8 + 0.3 * (-1) ** s + 0.002 * s, "kl": 0.05 * s, "length": 10.0}
        record["alerts"] = [{"step": s, "signal": "kl_limit", "action": "stop"}] if s == stop else []
        timeline.append(record)
    return timeline


def _lines(ax, prefix):
    return {line.get_gid(): line for line in ax.lines if (line.get_gid() or "").startswith(prefix)}


def test_rl_figure_draws_smoothed_over_raw_the_kl_levels_and_the_stop_and_returned_steps(tmp_path):
    config = MonitorConfig(kl_caution=0.1, kl_limit=0.25)
    timeline = _timeline()
    gold = {s: 0.1 + 0.01 * s for s in range(1, 61, 5)}
    fig = rl_figure(
        timeline,
        config,
        title="RL: ppo, run, seed 0",
        gold=gold,
        stop_step=50,
        returned_step=45,
        averaged_steps=[35, 40, 45],
    )
    reward_ax, kl_ax, length_ax = fig.axes[:3]
    gold_ax = fig.axes[3]  # the twin axis: gold on its own scale

    raw, smooth = _lines(reward_ax, "raw:")["raw:proxy"], _lines(reward_ax, "smoothed:")["smoothed:proxy"]
    assert raw.get_alpha() < 0.5 and (smooth.get_alpha() or 1.0) == 1.0  # raw faint, smoothed solid
    assert list(raw.get_ydata()) == [r["reward"] for r in timeline]
    assert list(smooth.get_ydata()) == [v for _, v in smoothed(timeline, "reward", config)]  # the monitors' mean
    assert max(smooth.get_ydata()) - min(smooth.get_ydata()) < max(raw.get_ydata()) - min(raw.get_ydata())
    assert {"raw:gold", "smoothed:gold"} <= set(_lines(gold_ax, ""))
    assert {"raw:length", "smoothed:length"} <= set(_lines(length_ax, ""))

    # KL per starting token (length 10): the quantity kl_caution / kl_limit apply to
    kl_raw = _lines(kl_ax, "raw:")["raw:KL per starting token"]
    assert math.isclose(kl_raw.get_ydata()[-1], 0.05 * 60 / 10)
    horizontal = [line.get_ydata()[0] for line in kl_ax.lines if list(line.get_ydata()) == [line.get_ydata()[0]] * 2]
    assert {0.1, 0.25} <= set(horizontal)
    for ax in (reward_ax, kl_ax, length_ax):
        vertical = {line.get_gid(): line.get_xdata()[0] for line in ax.lines if line.get_gid() in ("stop", "returned")}
        assert vertical == {"stop": 50, "returned": 45}
        assert [p.get_gid() for p in ax.patches] == ["averaged"]  # the checkpoints averaged into the returned model
    assert "ppo" in fig._suptitle.get_text() and "stopped at step 50 by kl_limit" in fig._suptitle.get_text()
    assert "returned step 45" in fig._suptitle.get_text()
    assert save_figure(fig, tmp_path / "rl.png").stat().st_size > 10_000


def test_rl_figure_without_a_stop_says_the_last_step_was_returned():
    fig = rl_figure(_timeline(stop=None), MonitorConfig(), title="RL: grpo", returned_step=60)
    assert not any(line.get_gid() == "stop" for line in fig.axes[0].lines) and not fig.axes[0].patches
    assert [line.get_xdata()[0] for line in fig.axes[1].lines if line.get_gid() == "returned"] == [60]
    assert "no stop alert; returned the last step (60)" in fig._suptitle.get_text()
