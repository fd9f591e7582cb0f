"""The monitors' record: the ``health.jsonl`` timeline, a rich table, the RL run's figure (:func:`rl_figure`) and
the Goodhart / length-entropy plots."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlhfkit.core.io import pyplot, save_figure
from rlhfkit.monitors.config import SERIES, SERIES_LABELS, SIGNALS, MonitorConfig
from rlhfkit.monitors.signals import kl_per_start_token, smoothed, start

Points = list[tuple[int, float]]


def load_timeline(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``health.jsonl`` file (or the run folder holding it)."""
    path = Path(path)
    path = path / "health.jsonl" if path.is_dir() else path
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _thresholds(config: MonitorConfig) -> dict[str, str]:
    c = config
    return {
        "kl_caution": f"> {c.kl_caution:g}/start token",
        "kl_limit": f"> {c.kl_limit:g}/start token",
        "ensemble_disagreement": f"x{c.disagreement_growth:g} start",
        "reward_gain_flattening": f"gain < {c.gain_flattening_fraction:g}x best",
        "negative_kl": f"< -{c.negative_kl_tolerance:g}",
        "length_drift": f"x{c.length_drift_ratio:g} start",
        "entropy_collapse": f"< {c.entropy_collapse_fraction:g}x start",
        "reward_variance": f"zero-std > {c.reward_zero_std_fraction:g}",
        "reward_kl_race": f"KL/start token/step > {c.reward_kl_slope:g}",
        "clipping": f"> {c.clip_fraction_max:g}",
        "truncation": f"+{c.truncation_rise:g} over start",
    }


def health_table(timeline: Sequence[Mapping[str, Any]], config: MonitorConfig | None = None):
    """A rich ``Table``: one row per signal with its metric's first and last value, threshold and status."""
    from rich.table import Table

    thresholds = _thresholds(config or MonitorConfig())
    fired: dict[str, list[Mapping[str, Any]]] = {}
    for record in timeline:
        for alert in record.get("alerts", []):
            fired.setdefault(alert["signal"], []).append(alert)
    steps = [r["step"] for r in timeline]
    table = Table(title=f"RL health, steps {min(steps, default=0)}-{max(steps, default=0)}")
    for column in ("signal", "metric", "first", "last", "threshold", "status"):
        table.add_column(column, justify="right" if column in ("first", "last") else "left")
    for signal, (series, _, _) in SIGNALS.items():
        if signal == "reward_variance" and any(r.get("frac_reward_zero_std") is not None for r in timeline):
            series = "frac_reward_zero_std"
        values = [r[series] for r in timeline if r.get(series) is not None]
        if not values:
            table.add_row(signal, SERIES_LABELS[series], "-", "-", thresholds[signal], "[dim]not logged[/dim]")
            continue
        alerts = fired.get(signal, [])
        status = "[green]ok[/green]"
        if alerts:
            colour = "red" if alerts[0]["action"] == "stop" else "yellow"
            status = f"[{colour}]{alerts[0]['action']} at step {alerts[0]['step']}[/{colour}]"
            status += f" (x{len(alerts)})" if len(alerts) > 1 else ""
        row = (SERIES_LABELS[series], f"{values[0]:.4g}", f"{values[-1]:.4g}", thresholds[signal], status)
        table.add_row(signal, *row)
    return table


def plot_health(
    timeline: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    series: Mapping[str, Mapping[int, float]] | None = None,
) -> list[Path]:
    """Write ``health_reward_kl.png`` (reward vs KL, the Goodhart curve) and ``health_length_entropy.png``.

    Extra series -- the timeline's ``health_extra_keys`` and ``series`` (name -> {global step: value}, e.g. a gold
    reward measured on checkpoints) -- are drawn against KL on a right axis, at the steps where the KL is known.
    Alerts are marked where they first fired. Returns the written paths.
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    known = {"step", "stage", "active", "alerts", "stop", *SERIES}
    extras: dict[str, dict[int, float]] = {}
    for record in timeline:
        for key, value in record.items():
            if key not in known and isinstance(value, int | float):
                extras.setdefault(key, {})[record["step"]] = value
    for name, values in (series or {}).items():
        extras.setdefault(name, {}).update({int(k): v for k, v in values.items()})
    first_alerts = {}
    for record in timeline:
        for alert in record.get("alerts", []):
            first_alerts.setdefault(alert["signal"], record)
    paths = []

    fig, ax = plt.subplots(figsize=(7, 5.5))
    kl_by_step = {r["step"]: r["kl"] for r in timeline if r.get("kl") is not None}
    pts = [(r["kl"], r["reward"], r["step"]) for r in timeline if r.get("kl") is not None and "reward" in r]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color="tab:blue", alpha=0.4)
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts], cmap="viridis", s=18)
        fig.colorbar(sc, ax=ax, label="global step", orientation="horizontal", pad=0.15, aspect=40)
    ax.set_xlabel("KL to reference (nats / sequence)")
    ax.set_ylabel("proxy reward", color="tab:blue")
    if extras:
        right = ax.twinx()
        for (name, values), colour in zip(
            sorted(extras.items()), ("tab:orange", "tab:red", "tab:purple", "tab:brown")
        ):
            xy = sorted((kl_by_step[s], v) for s, v in values.items() if s in kl_by_step)
            if xy:
                right.plot([p[0] for p in xy], [p[1] for p in xy], "o-", ms=3, color=colour, label=name)
        right.set_ylabel(", ".join(sorted(extras)))
        right.legend(loc="lower right", fontsize=8)
    for signal, record in first_alerts.items():
        if record.get("kl") is not None:
            ax.axvline(record["kl"], ls="--", lw=0.8, color="red")
            ax.annotate(
                f"{signal} @ {record['step']}",
                (record["kl"], 1),
                xycoords=("data", "axes fraction"),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="red",
            )
    ax.set_title("Reward vs KL (Goodhart curve)")
    paths.append(save_figure(fig, out_dir / "health_reward_kl.png"))

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, name in zip(axes, ("length", "entropy")):
        xy = [(r["step"], r[name]) for r in timeline if r.get(name) is not None]
        ax.plot([p[0] for p in xy], [p[1] for p in xy], "o-", ms=3)
        ax.set_ylabel(SERIES_LABELS[name])
        for record in first_alerts.values():
            ax.axvline(record["step"], ls="--", lw=0.8, color="red")
    for signal, record in first_alerts.items():
        axes[0].annotate(
            signal,
            (record["step"], 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color="red",
        )
    axes[-1].set_xlabel("global step")
    axes[0].set_title("Response length and entropy")
    paths.append(save_figure(fig, out_dir / "health_length_entropy.png"))
    return paths


# ------------------------------------------------------------------------------------------ the RL run at a glance
PROXY, GOLD, KL, LENGTH = "tab:blue", "tab:orange", "tab:purple", "tab:brown"


def _raw_and_smoothed(ax, raw: Points, smooth: Points, colour: str, label: str) -> None:
    """The per-step values faint, their smoothed line over them (``gid`` ``raw:label`` / ``smoothed:label``)."""
    if not raw:
        return
    line = ax.plot(*zip(*raw), color=colour, alpha=0.35, lw=0.8, marker="o", ms=2.5)[0]
    line.set_gid(f"raw:{label}")
    ax.plot(*zip(*smooth), color=colour, lw=2.0, label=label)[0].set_gid(f"smoothed:{label}")


def _mark_steps(
    axes, stop_step: int | None, stop_signal: str | None, returned_step: int | None, averaged: Sequence[int]
) -> None:
    """A red dashed line at the stop alert's step, a green one at the step whose weights were returned, and the
    steps whose weights were averaged into the returned model shaded green."""
    for ax in axes:
        if len(averaged) > 1:
            ax.axvspan(min(averaged), max(averaged), color="green", alpha=0.08, lw=0).set_gid("averaged")
        if stop_step is not None:
            label = f"stop alert{f' ({stop_signal})' if stop_signal else ''}, step {stop_step}"
            ax.axvline(stop_step, color="red", ls="--", lw=1.2, label=label).set_gid("stop")
        if returned_step is not None:
            ax.axvline(
                returned_step, color="green", ls="-", lw=1.2, alpha=0.8, label=f"returned model, step {returned_step}"
            ).set_gid("returned")


def rl_figure(
    timeline: Sequence[Mapping[str, Any]],
    config: MonitorConfig,
    *,
    title: str,
    gold: Mapping[int, float] | None = None,
    stop_step: int | None = None,
    returned_step: int | None = None,
    averaged_steps: Sequence[int] = (),
    reward_label: str = "reward-model score (proxy)",
):
    """The RL run in one figure (returned, not saved): proxy and gold reward (gold on its own right axis), KL per
    starting token with the monitors' ``kl_caution`` / ``kl_limit`` levels, and response length, over global steps.

    Every curve is its per-step values drawn faint under the monitors' own smoothing (:func:`smoothed`: the mean of
    the logs of the last ``smoothing_steps`` steps, the level a signal judges). The KL panel plots the quantity the
    KL thresholds apply to (:func:`kl_per_start_token`). Vertical lines mark the stop alert (``stop_step``) and the
    step whose weights the run returned (``returned_step``; shaded back to the oldest of ``averaged_steps``, the
    checkpoints averaged into it after a stop). ``gold``: global step -> gold reward (the lab's).
    """
    c, k = config, config.smoothing_steps
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4.2))
    reward_ax, kl_ax, length_ax = axes
    _raw_and_smoothed(reward_ax, _logged(timeline, "reward"), smoothed(timeline, "reward", c), PROXY, "proxy")
    reward_ax.set_ylabel(reward_label, color=PROXY)
    gold_ax = None
    if gold:
        gold_timeline = [{"step": s, "gold": v} for s, v in sorted(gold.items())]
        gold_ax = reward_ax.twinx()
        _raw_and_smoothed(gold_ax, _logged(gold_timeline, "gold"), smoothed(gold_timeline, "gold", c), GOLD, "gold")
        gold_ax.set_ylabel("gold reward (lab)", color=GOLD)
    reward_ax.set_title("Did it learn? reward")

    length0 = start(timeline, "length", c)
    raw_kl = kl_per_start_token(timeline, c)
    smooth_kl = [(s, v / length0) for s, v in smoothed(timeline, "kl", c)] if length0 else []
    _raw_and_smoothed(kl_ax, raw_kl, smooth_kl, KL, "KL per starting token")
    kl_ax.axhline(c.kl_caution, color="orange", ls=":", lw=1.5, label=f"kl_caution {c.kl_caution:g}")
    kl_ax.axhline(c.kl_limit, color="red", ls=":", lw=1.5, label=f"kl_limit {c.kl_limit:g}")
    kl_ax.set_ylabel(f"KL to SFT, nats / starting token ({length0 or 0:.1f} tokens)")
    kl_ax.set_title("How close to a stop? KL")

    length = _logged(timeline, "length")
    _raw_and_smoothed(length_ax, length, smoothed(timeline, "length", c), LENGTH, "length")
    length_ax.set_ylabel("response length (tokens)")
    length_ax.set_title("Response length")

    stop_signal = next((a["signal"] for r in timeline for a in r.get("alerts", []) if a.get("action") == "stop"), None)
    _mark_steps(axes, stop_step, stop_signal, returned_step, averaged_steps)
    for ax in axes:
        ax.set_xlabel(f"global step (faint: per step; solid: mean of the last {k} steps)")
        ax.grid(alpha=0.3)
    handles, labels = reward_ax.get_legend_handles_labels()
    if gold_ax is not None:
        more = gold_ax.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    reward_ax.legend(handles, labels, fontsize=8, loc="best")
    kl_ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{title}\n{_outcome(timeline, stop_step, stop_signal, returned_step)}")
    fig.tight_layout()
    return fig


def _outcome(timeline, stop_step: int | None, stop_signal: str | None, returned_step: int | None) -> str:
    """One line: whether a stop alert ended the run and whether the returned model is the last step's."""
    last = max((r["step"] for r in timeline), default=None)
    if stop_step is not None:
        returned = "the starting policy" if returned_step == 0 else f"step {returned_step}"
        return f"stopped at step {stop_step} by {stop_signal or 'a stop alert'}; returned {returned}, not the last"
    if returned_step is not None and returned_step != last:
        return f"no stop alert; returned step {returned_step} (last logged step {last})"
    return f"no stop alert; returned the last step ({last})"


def _logged(timeline: Sequence[Mapping[str, Any]], name: str) -> Points:
    return [(r["step"], r[name]) for r in timeline if r.get(name) is not None]
